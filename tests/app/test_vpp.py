"""``numanet-app vpp-config``: startup.conf sections and CLI lines, checked line by line
(there is no VPP here: the syntax is VPP 24.02's CLI, as the backend's stand-in speaks)."""

from __future__ import annotations

from cni.result import IpConfig, Route

MAC = "02:00:00:00:00:01"


def test_sockets_only(pod, run):
    pod.slot("memif-vpp", "memif", "slave", node=0, ifname="net1", mac=MAC, queues=2,
             ring_size=1024, buffer_size=2048, mtu=9000,
             ips=(IpConfig("10.57.0.4/24", "10.57.0.1"),), routes=(Route("10.78.0.0/16"),))
    pod.slot("vhostuser-vpp", "vhost-user", "server", node=0, ifname="net2",
             ips=(IpConfig("10.58.0.4/24", "10.58.0.1"), IpConfig("fd00::4/64", "fd00::1")),
             routes=(Route("0.0.0.0/0", "10.58.0.254"), Route("fd01::/64")))
    pod.slot("vhostc-vpp", "vhost-user", "client", node=0, ifname="net3")
    startup = run(pod, "vpp-config", "--cpus", "2-3,8")
    assert startup.code == 0, startup.err
    assert startup.out == ("cpu {\n  main-core 2\n  corelist-workers 3,8\n}\n"
                           "plugins {\n  plugin dpdk_plugin.so { disable }\n}\n")
    cli = run(pod, "vpp-config", "--cpus", "2-3,8", "--cli")
    assert cli.out.splitlines() == [
        "create memif socket id 1 filename /run/numanet/memif-vpp/memif-vpp-n0-000/sock",
        "create interface memif id 0 socket-id 1 slave rx-queues 2 tx-queues 2 ring-size 1024 "
        f"buffer-size 2048 hw-addr {MAC}",
        "set interface mtu packet 9000 memif1/0",
        "set interface state memif1/0 up",
        "set interface ip address memif1/0 10.57.0.4/24",
        "ip route add 10.78.0.0/16 via 10.57.0.1 memif1/0",
        "create vhost-user socket /run/numanet/vhostuser-vpp/vhostuser-vpp-n0-000/sock server",
        "set interface state VirtualEthernet0/0/0 up",
        "set interface ip address VirtualEthernet0/0/0 10.58.0.4/24",
        "set interface ip address VirtualEthernet0/0/0 fd00::4/64",
        "ip route add 0.0.0.0/0 via 10.58.0.254 VirtualEthernet0/0/0",
        "ip route add fd01::/64 via fd00::1 VirtualEthernet0/0/0",
        "create vhost-user socket /run/numanet/vhostc-vpp/vhostc-vpp-n0-000/sock",
        "set interface state VirtualEthernet0/0/1 up",
    ]


def test_memif_in_ip_mode_as_master(pod, run):
    pod.slot("memifip-vpp", "memif", "master", node=1, memif_mode="ip",
             ips=(IpConfig("10.60.0.2/24", "10.60.0.1"),), routes=(Route("10.61.0.0/16"),),
             address="10.60.0.2/24", peer="10.60.0.1", mac=MAC)
    cli = run(pod, "vpp-config", "--cpus", "4", "--cli")
    assert cli.out.splitlines() == [
        "create memif socket id 1 filename /run/numanet/memifip-vpp/memifip-vpp-n1-000/sock",
        "create interface memif id 0 socket-id 1 master mode ip",  # no MAC in mode ip
        "set interface state memif1/0 up",
        "set interface ip address memif1/0 10.60.0.2/24",
        "ip route add 10.61.0.0/16 via 10.60.0.1 memif1/0",
    ]
    startup = run(pod, "vpp-config", "--cpus", "4", "--exec", "/etc/vpp/numanet.cli")
    assert startup.out == ("unix {\n  exec /etc/vpp/numanet.cli\n}\n"
                           "cpu {\n  main-core 4\n}\n"
                           "plugins {\n  plugin dpdk_plugin.so { disable }\n}\n")


def test_a_nic_goes_to_the_dpdk_section_under_the_pods_name(pod, run):
    pod.nic("dpdk-nic", "0000:af:00.1", ifname="net1", mac=MAC, ips=(IpConfig("10.59.0.3/24"),))
    startup = run(pod, "vpp-config", "--cpus", "4-7", "--lcores", "3")
    assert startup.out == ("cpu {\n  main-core 4\n  corelist-workers 5-6\n}\n"
                           "dpdk {\n  dev 0000:af:00.1 { name net1 }\n}\n")
    cli = run(pod, "vpp-config", "--cpus", "4-7", "--cli")
    # network-status gives no prefix length: a host address, and a note saying so.
    assert cli.out.splitlines() == [f"set interface mac address net1 {MAC}",
                                    "set interface state net1 up",
                                    "set interface ip address net1 10.59.0.3/32"]
    assert "10.59.0.3 comes without its prefix length" in cli.err


def test_placement_errors_are_the_same_as_for_dpdk(pod, run):
    pod.slot("memif-vpp", "memif", "slave", node=0)
    assert run(pod, "vpp-config", "--cpus", "4-5").failed_clearly("not on the NUMA node")
    assert run(pod, "vpp-config", "--cpus", "2", "--lcores", "2").failed_clearly(
        "--lcores 2 is more than the 1 CPU this container may use (2)")
