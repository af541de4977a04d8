"""The demo's parts that decide something on their own, without starting anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config_file import ConfigError, parse_config_text
from demo.cleanup import describe
from demo.hugepages import GivenBack, give_back, reserve
from demo.journal import HugepageRecord, Journal
from demo.layout import Layout
from demo.pods import Pod, PodError
from demo.preflight import Missing, install_command
from demo.procs import holders, identify
from demo.testpmd import Settings
from deviceplugin.health import VSwitchState, slot_health
from deviceplugin.slots import Slot
from numa.model import NumaNode, Topology


def test_testpmd_gets_its_eal_arguments_from_numanet_app_in_the_pods_mounts() -> None:
    mounts = {"/run/numanet/vhostuser-ovs/vhostuser-ovs-n0-000": "/d/r/s/vhostuser-ovs-n0-000",
              "/run/d/huge": "/run/d/huge"}
    settings = Settings("nnd-x-pod-a", mounts, {"NUMANET_VHOSTUSER_OVS": "vhostuser-ovs-n0-000"},
                        cpus=(1, 0), eth_peer="02:00:00:00:00:02", netns="nnd-x-pod-a",
                        python="/venv/bin/python")
    command = settings.command()
    assert command[:8] == ["ip", "netns", "exec", "nnd-x-pod-a", "taskset", "-c", "1,0",
                           "unshare"]
    script = command[-1]
    # The host paths are staged, then bound at the container paths under the pod's /run.
    assert script.index("mount --bind /d/r/s/vhostuser-ovs-n0-000 /mnt/0") < \
        script.index("mount -t tmpfs numanet-pod /run") < \
        script.index("mount --bind /mnt/0 /run/numanet/vhostuser-ovs/vhostuser-ovs-n0-000")
    assert ("eal=$(env NUMANET_VHOSTUSER_OVS=vhostuser-ovs-n0-000 /venv/bin/python -m app "
            "dpdk-args --testpmd --lcores=2 --file-prefix=nnd-x-pod-a --memory=64) || exit 2"
            ) in script
    assert script.endswith("exec stdbuf -oL dpdk-testpmd $eal -i --total-num-mbufs=8192 "
                           "--forward-mode=macswap --eth-peer=0,02:00:00:00:00:02")
    one_cpu = Settings("p", mounts, {}, cpus=(0, 0)).command()
    assert one_cpu[:3] == ["taskset", "-c", "0"] and "--lcores=1" in one_cpu[-1]
    with pytest.raises(ValueError, match="outside /run"):
        Settings("p", {"/dev/hugepages": "/d/huge"}, {}).command()


def test_pod_paths_go_through_the_allocate_mounts() -> None:
    pod = Pod("demo", "pod-a", "vhostuser-ovs", "numanet.io/vhostuser-ovs", "ns")
    pod.mounts = {"/run/numanet/vhostuser-ovs/vhostuser-ovs-n0-000": "/d/r/s/vhostuser-ovs-n0-000",
                  "/run/numanet": "/elsewhere", "/dev/hugepages": "/d/huge"}
    assert pod.host_path("/run/numanet/vhostuser-ovs/vhostuser-ovs-n0-000/sock") == \
        Path("/d/r/s/vhostuser-ovs-n0-000/sock")
    assert pod.host_path("/dev/hugepages") == Path("/d/huge")
    with pytest.raises(PodError, match="not inside any mount"):
        pod.host_path("/etc/passwd")


def test_layout_refuses_directories_sockets_cannot_live_in() -> None:
    Layout(Path("/run/numanet-demo")).check()
    with pytest.raises(ValueError, match="107-byte"):
        Layout(Path("/run/" + "x" * 80)).check()
    with pytest.raises(ValueError, match="system directory"):
        Layout(Path("/run")).check()
    with pytest.raises(ValueError, match="absolute"):
        Layout(Path("demo")).check()
    assert Layout(Path("/run/a")).netns("pod-a") != Layout(Path("/run/b")).netns("pod-a")


def test_hugepages_go_back_to_the_original_or_by_the_demos_share(tmp_path: Path) -> None:
    sysctl = tmp_path / "nr_hugepages"
    sysctl.write_text("144\n")
    assert give_back(HugepageRecord(str(sysctl), 0, 144)) == GivenBack(144, 0, "")
    assert sysctl.read_text().strip() == "0"
    # Someone else raised it by 512 meanwhile: keep their pages, give back only ours.
    sysctl.write_text("656\n")
    given = give_back(HugepageRecord(str(sysctl), 0, 144))
    assert (given.pages, given.count, sysctl.read_text().strip()) == (144, 512, "512")
    assert "changed by someone else" in given.note


def test_journal_round_trip_and_damaged_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.json", identify(os.getpid()))
    journal.hugepages = HugepageRecord("/sys/x", 0, 144, "/d/huge")
    journal.add(netns="nnd-1-pod-a", mount="/d/huge", process=identify(os.getpid(), "me"))
    loaded = Journal.load(journal.path)
    assert loaded is not None
    assert (loaded.owner, loaded.netns, loaded.mounts) == (journal.owner, ["nnd-1-pod-a"],
                                                           ["/d/huge"])
    assert loaded.hugepages == journal.hugepages and loaded.processes[0].alive()
    assert oct(journal.path.stat().st_mode & 0o777) == "0o600"
    journal.path.write_text("{not json")
    assert Journal.load(journal.path) is None


def test_cleaned_counts_read_as_english() -> None:
    assert describe({"processes": 1, "netns": 2, "mounts": 1, "hugepages": 0}) == \
        "1 process, 2 netns, 1 mount"
    assert describe({}) == "nothing"


def test_reserve_gives_the_pages_back_when_the_kernel_has_too_few(tmp_path: Path) -> None:
    sysfs = tmp_path / "hugepages-2048kB"
    sysfs.mkdir()
    (sysfs / "nr_hugepages").write_text("10\n")
    (sysfs / "free_hugepages").write_text("3\n")  # the kernel found only a few pages
    journal = Journal.create(tmp_path / "journal.json")

    reservation, reason = reserve(journal, tmp_path / "huge", 144, sysfs_dir=sysfs)

    assert reservation is None and "only 3 of 144" in reason
    assert (sysfs / "nr_hugepages").read_text().strip() == "10"
    assert Journal.load(journal.path).hugepages is None  # nothing left to undo
    assert not (tmp_path / "huge").exists()


def test_install_command_names_each_package_once() -> None:
    missing = [Missing("ovs-vsctl", "openvswitch-switch-dpdk"),
               Missing("/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk",
                       "openvswitch-switch-dpdk"),
               Missing("dpdk-testpmd", "dpdk-dev")]
    assert install_command(missing) == (
        "apt-get install -y --no-install-recommends dpdk-dev openvswitch-switch-dpdk")


def test_holders_finds_a_process_by_open_file_and_not_others(tmp_path: Path) -> None:
    held = tmp_path / "held" / "file"
    held.parent.mkdir()
    held.write_text("x")
    with open(held) as handle:
        proc = subprocess.Popen(["sleep", "30"], stdin=handle)
    try:
        found = holders([held.parent])
        assert [(h.pid, h.name, h.path) for h in found] == [(proc.pid, "sleep", str(held))]
        assert holders([tmp_path / "other"]) == []
    finally:
        proc.kill()
        proc.wait()


def test_no_huge_config_keeps_slots_healthy_without_pages() -> None:
    # The demo's fallback when it cannot reserve pages: hugepages.required false.
    config = parse_config_text("hugepages: {pageSize: 2Mi, path: /run/d/huge, required: false}")
    assert config.hugepages.required is False
    with pytest.raises(ConfigError, match="hugepages.required"):
        parse_config_text("hugepages: {required: 'no'}")
    topology = Topology(nodes=(NumaNode(0, frozenset({0, 1}), None, None, {}),))
    slot = Slot("vhostuser-ovs-n0-000", "vhostuser-ovs", "numanet.io/vhostuser-ovs",
                "vhost-user", 0, vswitch="ovs")
    ovs = {"ovs": VSwitchState("ovs", True)}
    assert slot_health(slot, topology, ovs, config.hugepages, True).healthy
    strict = parse_config_text("hugepages: {pageSize: 2Mi}").hugepages
    assert "no 2Mi hugepages" in slot_health(slot, topology, ovs, strict, True).reason


def test_netns_dir_is_removed_only_when_empty(tmp_path: Path, monkeypatch) -> None:
    from demo import netns

    monkeypatch.setattr(netns, "NETNS_DIR", tmp_path / "netns")
    (tmp_path / "netns").mkdir()
    (tmp_path / "netns" / "someone-elses").touch()
    assert netns.remove_dir_if_empty() is False
    assert (tmp_path / "netns" / "someone-elses").exists()
    (tmp_path / "netns" / "someone-elses").unlink()
    assert netns.remove_dir_if_empty() is True
    assert not (tmp_path / "netns").exists()


def test_the_callers_own_command_line_does_not_hold_the_directory(tmp_path: Path) -> None:
    # `sudo numanet demo --dir X`: X is in sudo's command line (here a parent shell's $1),
    # yet sudo holds nothing there; a sibling that does (a sleep in X) still counts.
    script = ("from pathlib import Path; from demo.procs import holders; "
              "print(sorted(h.name for h in holders([Path(__import__('sys').argv[1])])))")
    shell = f"cd {tmp_path} && sleep 30 & {sys.executable} -c \"{script}\" \"$1\"; kill $!"
    done = subprocess.run(["sh", "-c", shell, "sh", str(tmp_path)], capture_output=True,
                          text=True, check=True, timeout=30)
    assert done.stdout.strip() == "['sleep']"


@pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace needs root")
def test_a_memif_pods_testpmd_opens_the_queue_pairs_its_numanet_json_names(
        tmp_path: Path) -> None:
    """The pod's command run for real (its mount namespace, numanet-app on numanet.json as
    the CNI writes it), with ``echo`` in place of testpmd to show the words it would get."""
    from cni.container_config import ContainerView, write_container_config
    from cni.result import IpamResult
    from deviceplugin import naming

    device_id = "memif-ovs-n0-003"
    host_dir = tmp_path / "s" / device_id
    container_dir = naming.container_slot_dir("memif-ovs", device_id)
    slot = Slot(device_id, "memif-ovs", "numanet.io/memif-ovs", "memif", 0, index=3,
                vswitch="ovs", container_role="slave", memif_mode="ethernet",
                host_dir=host_dir, container_dir=container_dir)
    write_container_config(slot, ContainerView("net", "net1", "02:00:00:00:00:03",
                                               IpamResult(), queues=3))
    pod = Pod("demo", "pod-a", "memif-ovs", "numanet.io/memif-ovs", "ns",
              device_id=device_id, mounts={str(container_dir): str(host_dir)},
              env={naming.pool_env_name("memif-ovs"): device_id})
    iface = pod.read_interface()
    assert (iface.kind, iface.role, iface.queues) == ("memif", "slave", 3)
    cpu = min(os.sched_getaffinity(0))

    settings = Settings("p", pod.mounts, pod.env, cpus=(cpu, cpu), binary="echo")
    done = subprocess.run(settings.command(), capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stdout + done.stderr
    words = done.stdout.splitlines()[-1].split()
    # The socket as the container sees it, DPDK's client role for the container's slave.
    assert f"--vdev=net_memif0,role=client,id=0,socket={container_dir}/sock," \
        "socket-abstract=no,mac=02:00:00:00:00:03" in " ".join(words)
    app = words[words.index("--") + 1:]
    assert app[:2] == ["--rxq=3", "--txq=3"] and "-i" in app
    assert "--file-prefix=p" in words


def test_memif_pods_get_the_pages_ovs_spends_on_their_ports() -> None:
    from demo import PODS
    from demo.scenario import HUGEPAGES, hugepages_for

    assert hugepages_for(("vhost-user", "vhost-user")) == HUGEPAGES
    assert hugepages_for(("vhost-user", "memif")) < hugepages_for(("memif", "memif"))
    assert PODS[0] == "vhost-user,vhost-user"  # the default stays the vhost-user pair
