"""Every limit of the pod's setup ends in exit 2 with what is wrong and what to do, and
never in a traceback."""

from __future__ import annotations

import json

import pytest

from app import cli
from app.errors import AppError


def test_no_interfaces(pod, run):
    ran = run(pod, "dpdk-args", "--cpus", "0")
    assert ran.failed_clearly("no numanet interface", "k8s.v1.cni.cncf.io/networks")
    # `interfaces` says where it looked, and is not an error.
    listed = run(pod, "interfaces")
    assert listed.code == 0 and "no numanet interfaces (looked at" in listed.out


def test_cpus_on_another_node_than_the_interfaces(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0)
    ran = run(pod, "dpdk-args", "--cpus", "4-5")
    assert ran.failed_clearly("CPUs (4-5 on node 1) are not on the NUMA node of its "
                              "interfaces (0)", "single-numa-node", "--cross-numa")
    accepted = run(pod, "dpdk-args", "--cpus", "4-5", "--cross-numa")
    assert accepted.code == 0 and accepted.words[:2] == ["-l", "4-5"]
    assert "note: the container's CPUs" in accepted.err


@pytest.mark.parametrize("lcores, needle", [
    ("0", "--lcores 0: DPDK needs at least one lcore"),
    ("-1", "--lcores -1: DPDK needs at least one lcore"),
    ("4", "--lcores 4 is more than the 3 CPUs this container may use (2-3,8)"),
])
def test_lcores_out_of_range(pod, run, lcores, needle):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0)
    assert run(pod, "dpdk-args", "--cpus", "2-3,8", "--lcores", lcores).failed_clearly(needle)
    # The edge itself is fine.
    assert run(pod, "dpdk-args", "--cpus", "2-3,8", "--lcores", "3").words[:2] == ["-l", "2-3,8"]
    assert run(pod, "dpdk-args", "--cpus", "2-3,8", "--lcores", "1").words[:2] == ["-l", "2"]


def test_memory_beyond_the_containers_hugepages(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0)
    pod.hugepages("/hugepages", "2M", request_mib=1024)
    assert run(pod, "dpdk-args", "--cpus", "2", "--memory", "1025").failed_clearly(
        "--memory 1025 MiB is more than the 1024 MiB of 2 MiB hugepages", "lower --memory")
    assert "--socket-mem=1024" in run(pod, "dpdk-args", "--cpus", "2", "--memory", "1024").words
    assert run(pod, "dpdk-args", "--cpus", "2", "--memory", "0").failed_clearly(
        "--memory 0: DPDK needs some memory")


def test_memory_below_one_page_and_a_split_too_small(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0, ifname="net1")
    pod.hugepages("/hugepages-1Gi", "1G", request_mib=1024)
    assert run(pod, "dpdk-args", "--cpus", "2", "--memory", "512").failed_clearly(
        "512 MiB is less than one 1024 MiB hugepage of /hugepages-1Gi")
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=1, ifname="net2")
    assert run(pod, "dpdk-args", "--cpus", "2,4", "--cross-numa").failed_clearly(
        "1024 MiB of 1024 MiB hugepages cannot be split over NUMA nodes 0, 1")


def test_huge_dir_that_is_not_a_mount(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0)
    pod.hugepages("/hugepages", "2M", request_mib=64)
    assert run(pod, "dpdk-args", "--cpus", "2", "--huge-dir", "/mnt/huge").failed_clearly(
        "--huge-dir /mnt/huge is not a hugetlbfs mount", "/hugepages")
    assert "--huge-dir=/hugepages" in run(pod, "dpdk-args", "--cpus", "2", "--huge-dir",
                                          "/hugepages/").words


@pytest.mark.parametrize("prefix", ["a/b", "", "-x", "x" * 65, "a b"])
def test_file_prefix_dpdk_cannot_use(pod, run, prefix):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0)
    assert run(pod, "dpdk-args", "--cpus", "2", f"--file-prefix={prefix}").failed_clearly(
        "is not a file name DPDK can use")


def test_memif_in_ip_mode_is_not_for_dpdk(pod, run):
    pod.slot("memifip-vpp", "memif", "slave", node=0, memif_mode="ip",
             address="10.60.0.2/24", peer="10.60.0.1")
    assert run(pod, "dpdk-args", "--cpus", "2").failed_clearly(
        "net1 is a memif in mode ip", "memifMode ethernet", "vpp-config")


def test_memif_ring_larger_than_net_memif_takes(pod, run):
    pod.slot("memif-ovs", "memif", "slave", node=0, ring_size=32768)
    assert run(pod, "dpdk-args", "--cpus", "2").failed_clearly(
        "ring size 32768 is not one DPDK's net_memif takes", "ringSize")


def test_memif_ring_at_net_memifs_limit(pod, run):
    pod.slot("memif-ovs", "memif", "slave", node=0, ring_size=16384)
    ran = run(pod, "dpdk-args", "--cpus", "2")
    assert ran.code == 0 and ran.out.endswith(",socket-abstract=no,rsize=14\n")


def _config(pod):
    return pod.slot_dir("vhostuser-ovs", "vhostuser-ovs-n0-000") / "numanet.json"


@pytest.mark.parametrize("change, needle", [
    ({"schemaVersion": "2.0"}, "has schema version 2.0; this numanet-app reads 1.x"),
    ({"schemaVersion": "one"}, "has schema version one"),
    ({"version": 2, "schemaVersion": None}, "has schema version 2.0"),
    ({"ips": "10.0.0.1"}, "ips is \"10.0.0.1\", not a list"),
    ({"numaNode": "0"}, "numaNode is \"0\", not an integer or null"),
    ({"kind": "tap"}, "kind 'tap' is none of vhost-user, memif, dpdk-nic"),
    ({"routes": [{"gw": "10.0.0.1"}]}, "routes holds"),
])
def test_numanet_json_newer_or_damaged(pod, run, change, needle):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0)
    doc = json.loads(_config(pod).read_text())
    doc.update(change)
    doc = {k: v for k, v in doc.items() if v is not None}
    _config(pod).write_text(json.dumps(doc))
    assert run(pod, "interfaces").failed_clearly(needle, str(_config(pod)))


def test_numanet_json_without_schema_version_is_read_as_1_0(pod, run):
    """numanet before schemaVersion wrote the same fields with version 1."""
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0)
    doc = json.loads(_config(pod).read_text())
    del doc["schemaVersion"]
    _config(pod).write_text(json.dumps(doc))
    assert run(pod, "dpdk-args", "--cpus", "2").code == 0


def test_numanet_json_not_json(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0)
    _config(pod).write_text("{")
    assert run(pod, "dpdk-args").failed_clearly("is not JSON")


def test_annotations_not_as_the_kubelet_writes_them(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0)
    pod.write()
    pod.write = lambda: pod  # keep the damaged file
    (pod.podnetinfo / "annotations").write_text('a="1"\nbroken line\n')
    assert run(pod, "interfaces").failed_clearly("annotations line 2 is not key=\"value\"")
    (pod.podnetinfo / "annotations").write_text(
        'k8s.v1.cni.cncf.io/network-status="[{"\n')
    assert run(pod, "interfaces").failed_clearly("network-status is not JSON")


def test_cpu_list_that_is_not_one(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0)
    assert run(pod, "dpdk-args", "--cpus", "two").failed_clearly("--cpus: 'two' is not a CPU "
                                                                 "list")
    assert run(pod, "dpdk-args", "--cpus", "3-1").failed_clearly("'3-1' is not a CPU range")


def test_a_path_the_shell_would_split_needs_json(pod, run):
    pod.status.append({"name": "default/odd", "interface": "net9", "device-info": {
        "type": "vhost-user", "version": "1.1.0",
        "vhost-user": {"mode": "client", "path": "/run/numanet/odd dir/x/sock"}}})
    ran = run(pod, "dpdk-args", "--cpus", "2")
    assert ran.failed_clearly("would not survive the shell's word splitting", "--json")
    words = json.loads(run(pod, "dpdk-args", "--cpus", "2", "--json").out)
    assert "--vdev=virtio_user0,path=/run/numanet/odd dir/x/sock" in words


def test_an_unexpected_failure_is_one_line_and_exit_1(pod, run, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "read_view", broken)
    ran = run(pod, "interfaces")
    assert ran.code == 1 and ran.err == "numanet-app: internal error: RuntimeError: boom " \
        "(please report it)\n"


def test_app_error_reads_as_message_and_hint():
    assert str(AppError("x is wrong", "do y")) == "x is wrong: do y"
    assert str(AppError("x is wrong")) == "x is wrong"
