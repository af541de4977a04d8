"""Everything numanet refuses, through the real shim: a CNI error JSON with the spec's
code and a message naming the problem, never a traceback, and nothing left behind."""

from __future__ import annotations

import os

import pytest
from helpers.cni_shim import assert_cni_error

from cni import errors

pytestmark = pytest.mark.ovs


def test_a_device_of_another_pod_is_refused(cni_bed, pod_netns):
    mine = cni_bed.slots.device_id("vhostuser-ovs", 0)
    theirs = cni_bed.slots.device_id("vhostuser-ovs", 1)
    cni_bed.allocate("default", "pod-a", mine)
    cni_bed.allocate("default", "pod-b", theirs)
    call = cni_bed.cni("ADD", cni_bed.netconf(theirs), "c1", netns_path=pod_netns.path)
    assert_cni_error(call, errors.DEVICE_NOT_ALLOCATED, theirs, "default/pod-a", mine)
    cni_bed.assert_clean()
    # Same device ID, pod unknown to the kubelet altogether.
    call = cni_bed.cni("ADD", cni_bed.netconf(theirs), "c1", netns_path=pod_netns.path,
                       pod=("default", "pod-z"))
    assert_cni_error(call, errors.DEVICE_NOT_ALLOCATED, "default/pod-z", "not known")
    cni_bed.assert_clean()


def test_the_same_id_from_another_pool_or_resource_is_refused(cni_bed, pod_netns):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 2)
    cni_bed.allocate("default", "pod-a", dev)
    call = cni_bed.cni("ADD", cni_bed.netconf(dev, pool="memif-ovs"), "c1",
                       netns_path=pod_netns.path)
    assert_cni_error(call, errors.DEVICE_MISMATCH, "memif-ovs", "vhostuser-ovs")
    call = cni_bed.cni("ADD", cni_bed.netconf(dev, resourceName="numanet.io/memif-ovs"), "c1",
                       netns_path=pod_netns.path)
    assert_cni_error(call, errors.DEVICE_MISMATCH, "numanet.io/memif-ovs")
    call = cni_bed.cni("ADD", cni_bed.netconf(dev, pool="no-such-pool"), "c1",
                       netns_path=pod_netns.path)
    assert_cni_error(call, errors.INVALID_NETWORK_CONFIG, "no-such-pool")
    call = cni_bed.cni("ADD", cni_bed.netconf("ghost-n0-000"), "c1", netns_path=pod_netns.path)
    assert_cni_error(call, errors.UNKNOWN_DEVICE, "ghost-n0-000")
    cni_bed.assert_clean()


def _bad_env_cases(netns_path: str, fifo: str) -> list[tuple[str, dict[str, str | None], int, str]]:
    pod = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-a"
    return [
        # A value with a trailing newline is not the value: it would split log lines.
        ("newline after container", {"CNI_CONTAINERID": "c1\n"}, errors.INVALID_ENVIRONMENT,
         "container ID"),
        ("newline after pod name", {"CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-a\n"},
         errors.INVALID_ENVIRONMENT, "DNS subdomain"),
        # Refused before it is opened: opening a FIFO would block the call.
        ("fifo as netns", {"CNI_NETNS": fifo}, errors.INVALID_ENVIRONMENT,
         "not a network namespace"),
        ("device as netns", {"CNI_NETNS": "/dev/null"}, errors.INVALID_ENVIRONMENT,
         "not a network namespace"),
        ("no command", {"CNI_COMMAND": None}, errors.INVALID_ENVIRONMENT, "CNI_COMMAND"),
        ("unknown command", {"CNI_COMMAND": "FROB"}, errors.INVALID_ENVIRONMENT, "FROB"),
        ("no container", {"CNI_CONTAINERID": None}, errors.INVALID_ENVIRONMENT,
         "CNI_CONTAINERID"),
        ("no netns", {"CNI_NETNS": None}, errors.INVALID_ENVIRONMENT, "CNI_NETNS"),
        ("no path", {"CNI_PATH": None}, errors.INVALID_ENVIRONMENT, "CNI_PATH"),
        ("bad container", {"CNI_CONTAINERID": "../../etc"}, errors.INVALID_ENVIRONMENT,
         "container ID"),
        ("long ifname", {"CNI_IFNAME": "averyverylongifname"}, errors.INVALID_ENVIRONMENT,
         "interface name"),
        ("slash ifname", {"CNI_IFNAME": "net/1"}, errors.INVALID_ENVIRONMENT, "interface name"),
        ("relative netns", {"CNI_NETNS": "netns/x"}, errors.INVALID_ENVIRONMENT, "absolute"),
        ("missing netns", {"CNI_NETNS": netns_path + "-gone"}, errors.UNKNOWN_CONTAINER,
         "does not exist"),
        ("file as netns", {"CNI_NETNS": "/etc/hostname"}, errors.INVALID_ENVIRONMENT,
         "not a network namespace"),
        ("relative CNI_PATH", {"CNI_PATH": "usr/lib/cni"}, errors.INVALID_ENVIRONMENT,
         "CNI_PATH"),
        ("args not k=v", {"CNI_ARGS": "K8S_POD_NAME"}, errors.INVALID_ENVIRONMENT, "KEY=VALUE"),
        ("bad pod name", {"CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=Pod_A"},
         errors.INVALID_ENVIRONMENT, "DNS subdomain"),
        ("bad namespace", {"CNI_ARGS": f"K8S_POD_NAMESPACE={'n' * 64};K8S_POD_NAME=p"},
         errors.INVALID_ENVIRONMENT, "DNS label"),
        ("unknown arg", {"CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-a;FOO=1"},
         errors.INVALID_ENVIRONMENT, "IgnoreUnknown"),
        ("no pod", {"CNI_ARGS": "IgnoreUnknown=1"}, errors.INVALID_ENVIRONMENT, "K8S_POD_NAME"),
        ("multicast MAC", {"CNI_ARGS": pod + ";MAC=01:00:5e:00:00:01"},
         errors.INVALID_ENVIRONMENT, "unicast"),
        ("bad MAC", {"CNI_ARGS": pod + ";MAC=zz:00:5e:00:00:01"}, errors.INVALID_ENVIRONMENT,
         "MAC"),
    ]


def test_malformed_environments(cni_bed, pod_netns):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 3)
    cni_bed.allocate("default", "pod-a", dev)
    conf = cni_bed.netconf(dev)
    fifo = cni_bed.base / "fifo"
    os.mkfifo(fifo)
    for name, changes, code, word in _bad_env_cases(pod_netns.path, str(fifo)):
        env = cni_bed.env("ADD", "c1", netns_path=pod_netns.path)
        for key, value in changes.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        call = cni_bed.run(env, conf)
        try:
            assert_cni_error(call, code, word)
        except AssertionError as exc:
            raise AssertionError(f"case {name!r}: {exc}") from None
    cni_bed.assert_clean()


def _bad_config_cases(bed, dev: str) -> list[tuple[str, bytes | dict, int, str]]:
    good = bed.netconf(dev)

    def but(**changes):
        conf = dict(good)
        for key, value in changes.items():
            if value is None:
                conf.pop(key, None)
            else:
                conf[key] = value
        return conf

    outside = bed.base / "elsewhere.json"
    return [
        ("not json", b"{cniVersion: 1.1.0", errors.DECODE_FAILURE, "not valid JSON"),
        ("array", b"[1, 2]", errors.DECODE_FAILURE, "not a JSON object"),
        ("empty", b"", errors.DECODE_FAILURE, "JSON"),
        ("not utf-8", b'{"name": "\xff\xfe"}', errors.DECODE_FAILURE, "UTF-8"),
        ("no version", but(cniVersion=None), errors.INVALID_NETWORK_CONFIG, "cniVersion"),
        ("future version", but(cniVersion="9.9.9"), errors.INCOMPATIBLE_VERSION, "9.9.9"),
        ("version as number", but(cniVersion=1.1), errors.INVALID_NETWORK_CONFIG, "string"),
        ("wrong type", but(type="bridge"), errors.INVALID_NETWORK_CONFIG, "numanet"),
        ("no name", but(name=None), errors.INVALID_NETWORK_CONFIG, "name"),
        ("mtu as text", but(mtu="9000"), errors.INVALID_NETWORK_CONFIG, "mtu must be an integer"),
        ("mtu as bool", but(mtu=True), errors.INVALID_NETWORK_CONFIG, "mtu"),
        ("mtu too small", but(mtu=10), errors.INVALID_NETWORK_CONFIG, "68"),
        ("vlan out of range", but(vlan=5000), errors.INVALID_NETWORK_CONFIG, "4094"),
        ("bridge name", but(bridge="a bridge"), errors.INVALID_NETWORK_CONFIG, "bridge"),
        ("pool name", but(pool="Not_A_Label"), errors.INVALID_NETWORK_CONFIG, "pool"),
        ("path in device ID", but(deviceID="../../etc/passwd"), errors.INVALID_NETWORK_CONFIG,
         "neither"),
        ("no device ID", but(deviceID=None), errors.INVALID_NETWORK_CONFIG, "resourceName"),
        ("two device IDs", but(runtimeConfig={"deviceID": bed.slots.device_id("vhostuser-ovs", 9)}),
         errors.INVALID_NETWORK_CONFIG, "differ"),
        ("device ID as number", but(deviceID=7), errors.INVALID_NETWORK_CONFIG, "deviceID"),
        ("runtimeConfig not object", but(runtimeConfig=[]), errors.INVALID_NETWORK_CONFIG,
         "runtimeConfig"),
        ("ipam without type", but(ipam={"ranges": []}), errors.INVALID_NETWORK_CONFIG,
         "ipam.type"),
        ("ipam path", but(ipam={"type": "../host-local"}), errors.INVALID_NETWORK_CONFIG,
         "ipam.type"),
        ("ipam missing", but(ipam={"type": "no-such-ipam"}), errors.INVALID_NETWORK_CONFIG,
         "CNI_PATH"),
        ("ipam refuses", but(ipam={"type": "host-local", "ranges": [[{"subnet": "banana"}]]}),
         errors.IPAM_FAILURE, "IPAM plugin host-local: invalid CIDR"),
        ("devinfo outside", but(runtimeConfig={"CNIDeviceInfoFile": str(outside)}),
         errors.INVALID_NETWORK_CONFIG, "CNIDeviceInfoFile"),
        ("devinfo escape", but(runtimeConfig={
            "CNIDeviceInfoFile": f"{bed.devinfo_root}/cni/../../../x.json"}),
         errors.INVALID_NETWORK_CONFIG, "CNIDeviceInfoFile"),
        ("devinfo of a device plugin", but(runtimeConfig={
            "CNIDeviceInfoFile": f"{bed.devinfo_root}/dp/numanet.io-x-device.json"}),
         errors.INVALID_NETWORK_CONFIG, "/cni"),
        ("runtime mac", but(runtimeConfig={"mac": "02:00:00:00:00"}), errors.INVALID_NETWORK_CONFIG,
         "MAC"),
        ("newline after runtime mac", but(runtimeConfig={"mac": "02:00:00:00:00:01\n"}),
         errors.INVALID_NETWORK_CONFIG, "MAC"),
        ("newline after name", but(name="numanet-test\n"), errors.INVALID_NETWORK_CONFIG,
         "name"),
        ("newline after bridge", but(bridge=bed.bridge + "\n"), errors.INVALID_NETWORK_CONFIG,
         "bridge"),
        ("newline after device ID", but(deviceID=dev + "\n"), errors.INVALID_NETWORK_CONFIG,
         "neither"),
        ("NUL in devinfo", but(runtimeConfig={
            "CNIDeviceInfoFile": f"{bed.devinfo_root}/cni/x\u0000.json"}),
         errors.INVALID_NETWORK_CONFIG, "CNIDeviceInfoFile"),
        ("prevResult not object", but(prevResult="x"), errors.INVALID_NETWORK_CONFIG, "prevResult"),
    ]


def test_malformed_configs(cni_bed, pod_netns):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 4)
    cni_bed.allocate("default", "pod-a", dev)
    for name, conf, code, word in _bad_config_cases(cni_bed, dev):
        call = cni_bed.cni("ADD", conf, "c1", netns_path=pod_netns.path)
        try:
            assert_cni_error(call, code, word)
        except AssertionError as exc:
            raise AssertionError(f"case {name!r}: {exc}") from None
        cni_bed.assert_clean()
    assert not (cni_bed.base / "elsewhere.json").exists()


def test_verb_specific_config_errors(cni_bed, pod_netns):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 5)
    conf = cni_bed.netconf(dev)
    check = cni_bed.cni("CHECK", conf, "c1", netns_path=pod_netns.path)
    assert_cni_error(check, errors.INVALID_NETWORK_CONFIG, "prevResult")
    old = cni_bed.cni("CHECK", {**conf, "cniVersion": "0.3.1", "prevResult": {}}, "c1",
                      netns_path=pod_netns.path)
    assert_cni_error(old, errors.INCOMPATIBLE_VERSION, "0.4.0")
    gc = cni_bed.cni("GC", conf, ifname="", pod=None)
    assert_cni_error(gc, errors.INVALID_NETWORK_CONFIG, "valid-attachments")
    bad_list = cni_bed.cni("GC", {**conf, "cni.dev/valid-attachments": [{"containerID": 1}]},
                           ifname="", pod=None)
    assert_cni_error(bad_list, errors.INVALID_NETWORK_CONFIG, "valid-attachments[0]")
    never_added = cni_bed.cni("CHECK", {**conf, "prevResult": {"cniVersion": "1.1.0"}}, "c9",
                              netns_path=pod_netns.path)
    assert_cni_error(never_added, errors.CHECK_FAILED, "no numanet attachment")


def test_failure_after_ipam_releases_the_lease(cni_bed, pod_netns):
    """OVS refuses the port (MTU above what netdev-dpdk takes): the IPAM lease that was
    taken in parallel is given back, no port, no file, no record."""
    dev = cni_bed.slots.device_id("vhostuser-ovs", 6)
    cni_bed.allocate("default", "pod-a", dev)
    call = cni_bed.cni("ADD", cni_bed.netconf(dev, mtu=20000), "c1", netns_path=pod_netns.path)
    assert_cni_error(call, errors.VSWITCH_FAILURE, "MTU")
    cni_bed.assert_clean()


def test_failure_after_the_plug_removes_the_port(cni_bed, pod_netns):
    """IPAM runs out of addresses while the port is being plugged: the port goes again."""
    first = cni_bed.slots.device_id("vhostuser-ovs", 7)
    second = cni_bed.slots.device_id("vhostuser-ovs", 8)
    cni_bed.allocate("default", "pod-a", first)
    cni_bed.allocate("default", "pod-b", second)
    tiny = {"type": "host-local", "dataDir": str(cni_bed.ipam_dir),
            "ranges": [[{"subnet": "10.79.0.0/24", "rangeStart": "10.79.0.5",
                         "rangeEnd": "10.79.0.5"}]]}
    ok = cni_bed.cni("ADD", cni_bed.netconf(first, ipam=tiny), "c1", netns_path=pod_netns.path)
    assert ok.rc == 0, ok.stdout
    full = cni_bed.cni("ADD", cni_bed.netconf(second, ipam=tiny), "c2", netns_path=pod_netns.path,
                       pod=("default", "pod-b"))
    assert_cni_error(full, errors.IPAM_FAILURE, "IPAM plugin host-local")
    assert [p["external_ids"]["numanet-device-id"] for p in cni_bed.ports()] == [first]
    assert len(cni_bed.container_files()) == 1 and len(cni_bed.records()) == 1
    assert cni_bed.cni("DEL", cni_bed.netconf(first, ipam=tiny), "c1").rc == 0
    cni_bed.assert_clean()


def test_failure_writing_the_devinfo_file_undoes_everything(cni_bed, pod_netns):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 9)
    cni_bed.allocate("default", "pod-a", dev)
    blocker = cni_bed.devinfo_root / "cni" / "blocker"
    blocker.write_text("a file where a directory should be")
    conf = cni_bed.netconf(dev, runtimeConfig={"CNIDeviceInfoFile": f"{blocker}/dev.json"})
    call = cni_bed.cni("ADD", conf, "c1", netns_path=pod_netns.path)
    assert_cni_error(call, errors.IO_FAILURE, "device-info")
    blocker.unlink()
    cni_bed.assert_clean()


def test_agent_down(cni_bed, pod_netns, tmp_path):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 10)
    missing = tmp_path / "no-agent.sock"
    env = cni_bed.env("ADD", "c1", netns_path=pod_netns.path, NUMANET_CNI_SOCKET=str(missing))
    call = cni_bed.run(env, cni_bed.netconf(dev, cniVersion="1.0.0"))
    doc = assert_cni_error(call, errors.TRY_AGAIN_LATER, str(missing), "start the numanet agent")
    assert doc["cniVersion"] == "1.0.0"
    # A socket left behind by a dead agent: connection refused, same answer.
    cni_bed.service.stop()
    stale = tmp_path / "stale.sock"
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))
    env["NUMANET_CNI_SOCKET"] = str(stale)
    call = cni_bed.run(env, cni_bed.netconf(dev))
    assert_cni_error(call, errors.TRY_AGAIN_LATER, str(stale))
    # The default socket path is named when nothing overrides it.
    env.pop("NUMANET_CNI_SOCKET")
    if not os.path.exists("/run/numanet/cni.sock"):
        call = cni_bed.run(env, cni_bed.netconf(dev))
        assert_cni_error(call, errors.TRY_AGAIN_LATER, "/run/numanet/cni.sock")
