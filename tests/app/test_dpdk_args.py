"""``numanet-app dpdk-args`` on pod views of every kind, checked word for word.

Node facts are helpers.sysfs.two_nodes: node 0 has CPUs 0-3,8-11, node 1 CPUs 4-7,12-15,
the NIC 0000:af:00.1 (vfio-pci) sits on node 1, the virtio NIC 0000:00:03.0 on none.
"""

from __future__ import annotations

import json

from helpers.podview import PodView
from helpers.sysfs import NodeSpec, build_sysfs

from cni.result import IpConfig

MAC = "02:00:00:00:00:01"
MAC2 = "02:00:00:00:00:02"
VHOST_SOCK = "/run/numanet/vhostuser-ovs/vhostuser-ovs-n0-000/sock"


def test_vhost_user_server_with_the_pods_own_hugepages(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0, mac=MAC,
             ips=(IpConfig("10.56.1.10/24", "10.56.1.1"),))
    pod.hugepages("/dev/hugepages", "2M")  # the host's, mounted by Allocate
    pod.hugepages("/hugepages", "2M", request_mib=1024)  # the pod's own volume
    ran = run(pod, "dpdk-args", "--cpus", "2-3")
    assert ran.code == 0, ran.err
    assert ran.words == [
        "-l", "2-3", "--file-prefix=numanet-vhostuser-ovs-n0-000",
        "--huge-dir=/hugepages", "--socket-mem=1024", "--single-file-segments", "--no-pci",
        f"--vdev=virtio_user0,path={VHOST_SOCK},server=1,mac={MAC}"]
    assert ran.err == ""


def test_vhost_user_client_on_node_1_without_hugepages(pod, run):
    pod.slot("vhostc-ovs", "vhost-user", "client", node=1, mac=MAC, ring_size=256)
    ran = run(pod, "dpdk-args", "--cpus", "4-5,12")
    assert ran.code == 0, ran.err
    assert ran.out == (
        "-l 4-5,12 --file-prefix=numanet-vhostc-ovs-n1-000 --no-huge -m 512 --no-pci "
        "--vdev=virtio_user0,path=/run/numanet/vhostc-ovs/vhostc-ovs-n1-000/sock,"
        f"queue_size=256,mac={MAC}\n")


def test_memif_slave_with_queues_rings_and_testpmds_queue_options(pod, run):
    pod.slot("memif-ovs", "memif", "slave", node=0, mac=MAC, queues=3, ring_size=1024,
             buffer_size=2048)
    pod.hugepages("/dev/hugepages", "2M")  # no request file, no cgroup limit: not known
    ran = run(pod, "dpdk-args", "--cpus", "0-1", "--testpmd")
    assert ran.code == 0, ran.err
    assert ran.words == [
        "-l", "0-1", "--file-prefix=numanet-memif-ovs-n0-000", "--huge-dir=/dev/hugepages",
        "--socket-mem=512", "--no-pci",
        "--vdev=net_memif0,role=client,id=0,socket=/run/numanet/memif-ovs/memif-ovs-n0-000/sock,"
        f"socket-abstract=no,rsize=10,bsize=2048,mac={MAC}",
        "--", "--rxq=3", "--txq=3"]


def test_memif_master_with_fewer_lcores_and_a_prefix_of_its_own(pod, run):
    pod.slot("memifm-vpp", "memif", "master", node=1)
    ran = run(pod, "dpdk-args", "--cpus", "4-7", "--lcores", "2", "--file-prefix", "mine")
    assert ran.code == 0, ran.err
    assert ran.words == [
        "-l", "4-5", "--file-prefix=mine", "--no-huge", "-m", "512", "--no-pci",
        "--vdev=net_memif0,role=server,id=0,socket=/run/numanet/memifm-vpp/memifm-vpp-n1-000/"
        "sock,socket-abstract=no"]


def test_dpdk_nic_on_node_1_with_1g_pages(pod, run):
    pod.nic("dpdk-nic", "0000:af:00.1", ifname="net1", mac=MAC)
    pod.hugepages("/hugepages-1Gi", "1G", request_mib=2048)
    ran = run(pod, "dpdk-args", "--cpus", "4-5")
    assert ran.code == 0, ran.err
    assert ran.words == ["-l", "4-5", "--file-prefix=numanet-0000-af-00-1",
                         "--huge-dir=/hugepages-1Gi", "--socket-mem=0,2048",
                         "-a", "0000:af:00.1"]


def test_a_nic_and_sockets_together_and_testpmd_gets_one_queue_count(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=1, ifname="net1")
    pod.slot("memif-ovs", "memif", "slave", node=1, ifname="net2", queues=2)
    pod.nic("dpdk-nic", "0000:af:00.1", ifname="net3")
    ran = run(pod, "dpdk-args", "--cpus", "4-5", "--testpmd")
    assert ran.code == 0, ran.err
    assert ran.words == [
        "-l", "4-5", "--file-prefix=numanet-vhostuser-ovs-n1-000", "--no-huge", "-m", "512",
        "-a", "0000:af:00.1",
        # testpmd opens --rxq queues on every port: the virtio port is given as many.
        "--vdev=virtio_user0,path=/run/numanet/vhostuser-ovs/vhostuser-ovs-n1-000/sock,"
        "server=1,queues=2",
        "--vdev=net_memif1,role=client,id=0,socket=/run/numanet/memif-ovs/memif-ovs-n1-000/sock,"
        "socket-abstract=no",
        "--", "--rxq=2", "--txq=2"]
    # Without --testpmd the virtio port keeps its own count.
    plain = run(pod, "dpdk-args", "--cpus", "4-5").words
    assert "--vdev=virtio_user0,path=/run/numanet/vhostuser-ovs/vhostuser-ovs-n1-000/sock," \
        "server=1" in plain
    assert "--" not in plain


def _two_nodes(pod: PodView) -> None:
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0, ifname="net1", mac=MAC)
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=1, index=0, ifname="net2", mac=MAC2)
    pod.hugepages("/hugepages", "2M", request_mib=1024)


def test_two_interfaces_on_two_nodes_are_refused_then_spread_when_accepted(pod, run):
    _two_nodes(pod)
    refused = run(pod, "dpdk-args", "--cpus", "2-5")
    assert refused.failed_clearly("different NUMA nodes", "net1 on node 0", "net2 on node 1",
                                  "--cross-numa")
    ran = run(pod, "dpdk-args", "--cpus", "2-5", "--cross-numa")
    assert ran.code == 0, ran.err
    assert ran.words == [
        "-l", "2-5", "--file-prefix=numanet-vhostuser-ovs-n0-000", "--huge-dir=/hugepages",
        "--socket-mem=512,512", "--single-file-segments", "--no-pci",
        f"--vdev=virtio_user0,path={VHOST_SOCK},server=1,mac={MAC}",
        "--vdev=virtio_user1,path=/run/numanet/vhostuser-ovs/vhostuser-ovs-n1-000/sock,"
        f"server=1,mac={MAC2}"]


def test_json_output_is_the_same_words(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0)
    words = run(pod, "dpdk-args", "--cpus", "2-3").words
    ran = run(pod, "dpdk-args", "--cpus", "2-3", "--json")
    assert json.loads(ran.out) == words


def test_cpus_past_rte_max_lcore_are_mapped_onto_lcore_ids(tmp_path, run):
    sysfs = build_sysfs(tmp_path / "sys", [NodeSpec(0, frozenset(range(128, 136)))])
    pod = PodView(tmp_path / "pod", sysfs=sysfs)
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0)
    ran = run(pod, "dpdk-args", "--cpus", "130-131", "--sysfs", str(sysfs.root))
    assert ran.code == 0, ran.err
    assert ran.words[:1] == ["--lcores=0@130,1@131"]


def test_more_lcores_than_the_node_has_spill_over_with_a_note(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=1)
    ran = run(pod, "dpdk-args", "--cpus", "0,4-5", "--lcores", "3")
    assert ran.code == 0, ran.err
    # The main lcore stays on the interfaces' node.
    assert ran.words[:3] == ["-l", "0,4-5", "--main-lcore=4"]
    assert "note: CPUs 0 are not on the interfaces' NUMA node 1" in ran.err
    # By default only the node's CPUs are taken.
    assert run(pod, "dpdk-args", "--cpus", "0,4-5").words[:2] == ["-l", "4-5"]


def test_a_nic_of_unknown_node_takes_every_cpu_and_lets_dpdk_place_memory(pod, run):
    pod.nic("dpdk-nic", "0000:00:03.0")  # virtio, numa_node -1
    pod.hugepages("/hugepages", "2M", request_mib=256)
    ran = run(pod, "dpdk-args", "--cpus", "3-4")
    assert ran.code == 0, ran.err
    assert ran.words == ["-l", "3-4", "--file-prefix=numanet-0000-00-03-0",
                         "--huge-dir=/hugepages", "-m", "256", "-a", "0000:00:03.0"]


def test_hugepages_in_sight_but_none_allowed_run_without_them(pod, run, tmp_path):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0)
    pod.hugepages("/dev/hugepages", "2M")
    cgroup = pod.root / "sys" / "fs" / "cgroup"
    cgroup.mkdir(parents=True)
    (cgroup / "hugetlb.2MB.max").write_text("0\n")
    (cgroup / "hugetlb.1GB.max").write_text("max\n")
    ran = run(pod, "dpdk-args", "--cpus", "2")
    assert ran.code == 0, ran.err
    assert ["--no-huge", "-m", "512"] == ran.words[3:6]
    assert "may use no hugepages of 2 MiB" in ran.err
    # Named explicitly, the mount is refused with the reason.
    refused = run(pod, "dpdk-args", "--cpus", "2", "--huge-dir", "/dev/hugepages")
    assert refused.failed_clearly("may use no 2 MiB hugepages", "hugepages-2Mi")


def test_the_cgroup_limit_sizes_memory_without_the_webhooks_files(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0)
    pod.hugepages("/dev/hugepages", "2M")
    cgroup = pod.root / "sys" / "fs" / "cgroup" / "hugetlb"  # cgroup v1
    cgroup.mkdir(parents=True)
    (cgroup / "hugetlb.2MB.limit_in_bytes").write_text(f"{768 << 20}\n")
    ran = run(pod, "dpdk-args", "--cpus", "2")
    assert "--socket-mem=768" in ran.words


def test_hugepages_asked_for_but_not_mounted_are_named(pod, run):
    pod.slot("vhostuser-ovs", "vhost-user", "server", node=0)
    pod.hugepages("/hugepages", "2M", request_mib=1024)
    pod.mounts.clear()
    ran = run(pod, "dpdk-args", "--cpus", "2")
    assert ran.words[3:6] == ["--no-huge", "-m", "512"]
    assert "may use hugepages but none is mounted" in ran.err
