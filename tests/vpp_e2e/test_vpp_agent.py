"""memif and vhost-user pools on VPP through the real agent, end to end: the kubelet
stand-in allocates, the shim runs ADD/CHECK/DEL against the agent's CNI socket, the
VPP stand-in server receives VPP's binary API from the real vpp_papi client, and VPP
and the agent are restarted under running pods."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from helpers.cni_shim import CniCall, assert_cni_error, require_host_local
from helpers.deviceplugin import check_device_info
from helpers.netns import NetNS, netns
from helpers.ovs import private_ovs, unique_bridge

from cni import errors
from demo.kubelet_standin.kubelet import StandinError
from demo.private_ovs import PrivateOvs
from deviceplugin import naming
from tests.vswitch.vpp_fixtures import is_socket
from tests.vswitch.vpp_timing import wait_for

from .conftest import (
    MEMIF,
    MEMIF_BUFFER,
    MEMIF_IP,
    MEMIF_RING,
    VHOST,
    VHOST_OVS,
    VHOST_RING,
    VppNode,
    config_text,
    make_node,
    resource,
    stop_node,
)

__all__ = ["private_ovs"]
pytestmark = pytest.mark.filterwarnings("ignore:open_text is deprecated:DeprecationWarning")
VPP_POOLS = (MEMIF, MEMIF_IP, VHOST)


def all_healthy(devices: dict) -> bool:
    return bool(devices) and all(d.healthy for d in devices.values())


def none_healthy(devices: dict) -> bool:
    return bool(devices) and not any(d.healthy for d in devices.values())


def assert_ok(call: CniCall) -> CniCall:
    assert call.rc == 0, call.stdout + call.stderr
    return call


@pytest.fixture
def pod_ns() -> Iterator[NetNS]:
    with netns("nnve") as ns:
        yield ns


def plug_pod(node: VppNode, pod: str, pool: str, ns: NetNS) -> tuple[str, dict]:
    """Admit a pod for one device of ``pool`` and ADD its network; (device ID, config)."""
    device_id = node.admit(pod, pool)
    conf = node.netconf(pod, pool)
    add = assert_ok(node.cni("ADD", conf, f"c-{pod}", pod, ns.path))
    return device_id, {**conf, "prevResult": add.json}


# -- 1. plumbing ----------------------------------------------------------------------------


def test_memif_and_vhost_user_slots_are_plumbed_into_vpp_and_removed(vpp_node: VppNode):
    node = vpp_node
    memif_id = node.admit("pod-m", MEMIF)
    vhost_id = node.admit("pod-v", VHOST)
    memif_slot = node.agent.manager.slot(memif_id)
    vhost_slot = node.agent.manager.slot(vhost_id)
    memif_sock = str(memif_slot.host_socket)
    vhost_sock = str(vhost_slot.host_socket)
    node.vpp.clear_calls()

    with netns("nnve") as ns_m, netns("nnve") as ns_v:
        conf_m = node.netconf("pod-m", MEMIF)
        add_m = assert_ok(node.cni("ADD", conf_m, "cm", "pod-m", ns_m.path))
        conf_v = node.netconf("pod-v", VHOST)
        assert_ok(node.cni("ADD", conf_v, "cv", "pod-v", ns_v.path))

        # What VPP was asked to do, on the slots' own socket paths.
        [sock_add] = node.vpp.calls_named("memif_socket_filename_add_del_v2")
        assert sock_add.args["is_add"] and sock_add.args["socket_filename"] == memif_sock
        [create] = node.vpp.calls_named("memif_create_v2")
        assert create.args["socket_id"] == sock_add.args["socket_id"]
        assert create.args["role"] == 0 and create.args["mode"] == 0  # VPP master, ethernet
        # The pool's ringSize / bufferSize, as VPP received them.
        assert (create.args["ring_size"], create.args["buffer_size"]) == (MEMIF_RING,
                                                                           MEMIF_BUFFER)
        [vhost] = node.vpp.calls_named("create_vhost_user_if_v2")
        assert vhost.args["sock_filename"] == vhost_sock and vhost.args["is_server"]
        assert vhost.args["tag"] == vhost_id
        [bd_add] = node.vpp.calls_named("bridge_domain_add_del_v2")
        assert bd_add.args["is_add"] and bd_add.args["bd_tag"] == f"numanet:{node.network}"
        tags = node.vpp_tags()
        joins = [c.args for c in node.vpp.calls_named("sw_interface_set_l2_bridge")]
        assert sorted(j["rx_sw_if_index"] for j in joins if j["enable"]) == \
            sorted([tags[memif_id], tags[vhost_id]])
        assert {j["bd_id"] for j in joins} == {bd_add.args["bd_id"]}
        assert node.vpp_bridge_domains() == {f"numanet:{node.network}":
                                             {tags[memif_id], tags[vhost_id]}}
        # VPP listens on both (memif master, vhost-user server), never world-accessible.
        assert is_socket(memif_sock) and is_socket(vhost_sock)
        assert stat.S_IMODE(os.stat(memif_sock).st_mode) & 0o007 == 0

        # What the container reads, with the paths it sees.
        container_dir = f"/run/numanet/{MEMIF}/{memif_id}"
        doc = json.loads((memif_slot.host_dir / naming.CONTAINER_CONFIG_NAME).read_text())
        assert (doc["kind"], doc["role"], doc["memifMode"]) == ("memif", "slave", "ethernet")
        assert doc["memifId"] == create.args["id"]
        assert doc["socketPath"] == f"{container_dir}/sock"
        assert doc["ips"] and doc["ips"][0]["address"].startswith("10.66.0.")
        # memif's slave (the container here) allocates the rings: it needs the sizes too.
        assert (doc["ringSize"], doc["bufferSize"]) == (MEMIF_RING, MEMIF_BUFFER)
        assert "address" not in doc and "peer" not in doc  # ethernet mode: bridged
        vdoc = json.loads((vhost_slot.host_dir / naming.CONTAINER_CONFIG_NAME).read_text())
        assert (vdoc["kind"], vdoc["mode"]) == ("vhost-user", "client")
        # A vhost-user ring is sized by the container's virtio driver: VPP's call has no
        # size for it (the stand-in's decoder would refuse one), the container gets it.
        assert vdoc["ringSize"] == VHOST_RING and "bufferSize" not in vdoc
        assert vdoc["socketPath"] == f"/run/numanet/{VHOST}/{vhost_id}/sock"
        result = add_m.json
        assert result["interfaces"][0]["socketPath"] == f"{container_dir}/sock"
        # Device-info: the file Allocate wrote and the one Multus asked the CNI for.
        cni_devinfo = Path(conf_m["runtimeConfig"]["CNIDeviceInfoFile"])
        for path in (naming.devinfo_path(resource(MEMIF), memif_id, node.harness.devinfo_dir),
                     cni_devinfo):
            info = json.loads(path.read_text())
            check_device_info(info)
            assert info["memif"] == {"role": "slave", "mode": "ethernet",
                                     "path": f"{container_dir}/sock"}

        check = node.cni("CHECK", {**conf_m, "prevResult": result}, "cm", "pod-m", ns_m.path)
        assert_ok(check)

        assert_ok(node.cni("DEL", conf_m, "cm", "pod-m"))
        assert_ok(node.cni("DEL", conf_v, "cv", "pod-v"))
        # DEL is idempotent.
        assert_ok(node.cni("DEL", conf_m, "cm", "pod-m"))

    assert node.vpp_tags() == {}
    assert node.vpp_socket_ids() == {}
    assert node.vpp_bridge_domains() == {}
    assert not os.path.lexists(memif_sock) and not os.path.lexists(vhost_sock)
    assert node.records() == [] and node.leases() == []
    assert not (memif_slot.host_dir / naming.CONTAINER_CONFIG_NAME).exists()
    assert not cni_devinfo.exists()
    assert node.agent.vswitches["vpp"].remembered() == ()


def test_memif_ip_mode_is_routed_with_the_gateway_as_vpps_address_kept_over_restarts(
        vpp_node: VppNode, pod_ns: NetNS):
    # An ip-mode memif is routed, not bridged: IPAM runs first, VPP's side takes the
    # gateway IPAM gave the container (with the subnet's prefix), and the container is told
    # its own address and that peer.
    node = vpp_node
    device_id = node.admit("pod-i", MEMIF_IP)
    slot = node.agent.manager.slot(device_id)
    config_file = slot.host_dir / naming.CONTAINER_CONFIG_NAME
    conf = node.netconf("pod-i", MEMIF_IP)
    node.vpp.clear_calls()

    add = assert_ok(node.cni("ADD", conf, "ci", "pod-i", pod_ns.path))
    [ip] = add.json["ips"]
    assert ip["address"].startswith("10.66.0.") and ip["address"].endswith("/24")
    assert ip["gateway"] == "10.66.0.1"  # host-local's default: the subnet's first address
    [create] = node.vpp.calls_named("memif_create_v2")
    assert create.args["mode"] == 1  # MEMIF_MODE_API_IP
    assert create.args["role"] == 1  # VPP slave: the pool's container role is master
    assert (create.args["ring_size"], create.args["buffer_size"]) == (0, 0)  # VPP's defaults
    sw_if_index = node.vpp_tags()[device_id]
    [address] = node.vpp.calls_named("sw_interface_add_del_address")
    assert address.args["sw_if_index"] == sw_if_index and address.args["is_add"]
    assert str(address.args["prefix"]) == "10.66.0.1/24"
    assert node.vpp_addresses()[device_id] == ["10.66.0.1/24"]
    # Routed: no bridge domain was made or joined.
    assert node.vpp.calls_named("sw_interface_set_l2_bridge") == []
    assert node.vpp_bridge_domains() == {}

    doc = json.loads(config_file.read_text())
    assert (doc["kind"], doc["role"], doc["memifMode"]) == ("memif", "master", "ip")
    assert doc["address"] == ip["address"] and doc["peer"] == "10.66.0.1"
    assert doc["ips"] == [{"address": ip["address"], "gateway": "10.66.0.1"}]
    assert "ringSize" not in doc
    assert_ok(node.cni("CHECK", {**conf, "prevResult": add.json}, "ci", "pod-i", pod_ns.path))

    # The agent restarts while VPP restarts too (VPP comes back empty): the adoption plugs
    # the recorded attachment again with the address the ADD gave, not a new one.
    node.harness.stop_agent()
    node.vpp.crash()
    node.harness.start_agent()
    node.harness.wait_devices(resource(MEMIF_IP), none_healthy)
    node.vpp.clear_calls()
    node.vpp.start()
    node.harness.wait_devices(resource(MEMIF_IP), all_healthy)
    [again] = node.vpp.calls_named("sw_interface_add_del_address")
    assert str(again.args["prefix"]) == "10.66.0.1/24"
    assert node.vpp_addresses() == {device_id: ["10.66.0.1/24"]}
    assert [c.args["mode"] for c in node.vpp.calls_named("memif_create_v2")] == [1]
    assert json.loads(config_file.read_text()) == doc  # the container's view is unchanged

    replugged = node.vpp_tags()[device_id]
    assert_ok(node.cni("DEL", conf, "ci", "pod-i"))
    assert [c.args["sw_if_index"] for c in node.vpp.calls_named("memif_delete")] == [replugged]
    assert node.vpp_tags() == {} and node.vpp_socket_ids() == {}
    assert node.records() == [] and node.leases() == []
    assert not config_file.exists()
    assert not Path(conf["runtimeConfig"]["CNIDeviceInfoFile"]).exists()


def test_memif_ip_mode_without_ipam_is_refused_before_any_change(vpp_node: VppNode,
                                                                 pod_ns: NetNS):
    node = vpp_node
    device_id = node.admit("pod-j", MEMIF_IP)
    conf = {k: v for k, v in node.netconf("pod-j", MEMIF_IP).items() if k != "ipam"}
    node.vpp.clear_calls()
    add = node.cni("ADD", conf, "cj", "pod-j", pod_ns.path)
    assert_cni_error(add, errors.INVALID_NETWORK_CONFIG, device_id, "mode ip", "ipam")
    assert node.vpp.calls_named("memif_create_v2") == []
    assert node.vpp_tags() == {} and node.records() == []
    assert not Path(conf["runtimeConfig"]["CNIDeviceInfoFile"]).exists()


# -- 2. VPP restarts under the running agent --------------------------------------------------


def test_vpp_restart_turns_slots_unhealthy_then_replays_every_port_once(
        vpp_node: VppNode, caplog: pytest.LogCaptureFixture):
    node = vpp_node
    with netns("nnve") as ns_m, netns("nnve") as ns_v, netns("nnve") as ns_x:
        memif_id, conf_m = plug_pod(node, "pod-m", MEMIF, ns_m)
        vhost_id, conf_v = plug_pod(node, "pod-v", VHOST, ns_v)
        node.admit("pod-x", MEMIF)
        memif_sock = str(node.agent.manager.slot(memif_id).host_socket)
        before = node.vpp_tags()
        assert set(before) == {memif_id, vhost_id}

        node.vpp.crash()  # sockets close, files stay, every interface is gone
        for pool in VPP_POOLS:
            node.harness.wait_devices(resource(pool), none_healthy)
        state = node.agent.vswitch_monitor.states()["vpp"]
        assert not state.healthy and "VPP" in state.reason
        # A pod starting now is told to retry at once (the monitor knows VPP is down);
        # nothing of it stays.
        late = node.cni("ADD", node.netconf("pod-x", MEMIF), "c-pod-x", "pod-x", ns_x.path)
        assert_cni_error(late, errors.TRY_AGAIN_LATER, "vSwitch vpp is down",
                         f"device_id={node.pods['pod-x']}", "pod=default/pod-x")
        assert node.records() == sorted([memif_id, vhost_id])
        assert len(node.leases()) == 2

        node.vpp.clear_calls()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="cni.replay"):
            node.vpp.start()  # empty, like a VPP that restarted
            for pool in VPP_POOLS:
                node.harness.wait_devices(resource(pool), all_healthy)
            # Healthy means the ports are back already: the backend reports unhealthy
            # until its replay is done.
            assert set(node.vpp_tags()) == {memif_id, vhost_id}
            assert is_socket(memif_sock)
            # Exactly once: the backend replayed; the agent did not replay as well.
            assert len(node.vpp.calls_named("memif_create_v2")) == 1
            assert len(node.vpp.calls_named("create_vhost_user_if_v2")) == 1
            assert len(node.vpp.calls_named("memif_socket_filename_add_del_v2")) == 1
            assert len(node.vpp.calls_named("bridge_domain_add_del_v2")) == 1
            wait_for(lambda: len(node.vpp.calls_named("show_threads")) >= 3,
                     what="a few more monitor rounds")
            assert [r.getMessage() for r in caplog.records if r.name == "cni.replay"] == []
        assert len(node.vpp.calls_named("memif_create_v2")) == 1
        bd = node.vpp_bridge_domains()
        assert bd == {f"numanet:{node.network}": set(node.vpp_tags().values())}

        # The pods' attachments are whole again: CHECK passes, the late pod can start.
        assert_ok(node.cni("CHECK", conf_m, "c-pod-m", "pod-m", ns_m.path))
        assert_ok(node.cni("CHECK", conf_v, "c-pod-v", "pod-v", ns_v.path))
        assert_ok(node.cni("ADD", node.netconf("pod-x", MEMIF), "c-pod-x", "pod-x", ns_x.path))

        for pod, conf in (("pod-m", conf_m), ("pod-v", conf_v),
                          ("pod-x", node.netconf("pod-x", MEMIF))):
            assert_ok(node.cni("DEL", conf, f"c-{pod}", pod))
    assert node.vpp_tags() == {} and node.vpp_socket_ids() == {}
    assert node.records() == [] and node.leases() == []
    assert not os.path.lexists(memif_sock)


def test_del_while_vpp_is_down_is_retried_and_the_port_does_not_come_back(
        vpp_node: VppNode, pod_ns: NetNS):
    node = vpp_node
    device_id, conf = plug_pod(node, "pod-d", MEMIF, pod_ns)
    sock = str(node.agent.manager.slot(device_id).host_socket)
    node.vpp.crash()
    node.harness.wait_devices(resource(MEMIF), none_healthy)
    down = node.cni("DEL", conf, "c-pod-d", "pod-d")
    assert_cni_error(down, errors.TRY_AGAIN_LATER)
    assert node.records() == [device_id]  # kept: the runtime retries the DEL

    node.vpp.start()
    node.harness.wait_devices(resource(MEMIF), all_healthy)
    assert set(node.vpp_tags()) == {device_id}  # the attachment still stands: replayed
    assert_ok(node.cni("DEL", conf, "c-pod-d", "pod-d"))
    assert node.vpp_tags() == {} and node.records() == [] and node.leases() == []
    assert not os.path.lexists(sock)
    # A later VPP restart must not resurrect it.
    node.vpp.restart()
    wait_for(lambda: node.agent.vswitches["vpp"].health().healthy, what="VPP back")
    assert node.vpp_tags() == {}


# -- 3. the agent restarts; VPP keeps running ------------------------------------------------


def test_agent_restart_adopts_the_ports_vpp_kept_and_removes_those_no_pod_holds(
        vpp_node: VppNode):
    node = vpp_node
    with netns("nnve") as ns_a:
        kept_id, conf_a = plug_pod(node, "pod-a", MEMIF, ns_a)
        with netns("nnve") as ns_b:
            stale_id, _ = plug_pod(node, "pod-b", VHOST, ns_b)
        stale_sock = str(node.agent.manager.slot(stale_id).host_socket)
        kept_sw_if_index = node.vpp_tags()[kept_id]

        node.harness.stop_agent()
        # VPP keeps both ports over the agent's restart.
        assert set(node.vpp_tags()) == {kept_id, stale_id}
        # Meanwhile pod-b ended (its network namespace went above) and the kubelet forgot it.
        node.kubelet.remove_pod("default", "pod-b")
        node.vpp.clear_calls()

        node.harness.start_agent()
        for pool in VPP_POOLS:
            node.harness.wait_devices(resource(pool), all_healthy)

        # pod-a's port was adopted as VPP kept it: nothing created, same interface.
        assert node.vpp_tags() == {kept_id: kept_sw_if_index}
        assert node.vpp.calls_named("memif_create_v2") == []
        assert node.vpp.calls_named("memif_socket_filename_add_del_v2") == []
        # pod-b's attachment is gone everywhere: VPP, socket file, lease, record, allocation.
        assert [c.args["sw_if_index"] for c in node.vpp.calls_named("delete_vhost_user_if")]
        assert not os.path.lexists(stale_sock)
        assert node.records() == [kept_id]
        assert len(node.leases()) == 1
        assert stale_id not in node.agent.allocator.all()
        assert kept_id in node.agent.allocator.all()
        # The new backend knows pod-a's slot again: CHECK finds its owner, and a VPP restart
        # now replays it.
        backend = node.agent.vswitches["vpp"]
        assert backend.remembered() == (kept_id,)
        assert_ok(node.cni("CHECK", conf_a, "c-pod-a", "pod-a", ns_a.path))
        node.vpp.restart()
        wait_for(lambda: set(node.vpp_tags()) == {kept_id}, what="pod-a replayed")

        # pod-a ends too, and the runtime's GC (no attachment stays) removes it from VPP.
        node.kubelet.remove_pod("default", "pod-a")
        gc = node.cni("GC", {**node.netconf("pod-a", MEMIF), "cni.dev/valid-attachments": []},
                      "", "")
        assert_ok(gc)
    assert node.vpp_tags() == {} and node.vpp_socket_ids() == {}
    assert node.records() == [] and node.leases() == []
    assert node.agent.allocator.all() == {}
    assert backend.remembered() == ()


def test_del_check_and_gc_before_the_adoption_after_an_agent_restart_leak_no_port(
        vpp_node: VppNode, monkeypatch: pytest.MonkeyPatch):
    # After an agent restart the new VPP backend does not know who owns the ports VPP
    # kept (VPP's tags carry only the device ID) until the adoption has run: it reports
    # them with an empty owner. A DEL or GC in that window must still remove the port the
    # record names; CHECK must still pass.
    node = vpp_node
    with netns("nnve") as ns_a, netns("nnve") as ns_b:
        dev_a, conf_a = plug_pod(node, "pod-a", MEMIF, ns_a)
        dev_b, conf_b = plug_pod(node, "pod-b", VHOST, ns_b)
        sock_a = str(node.agent.manager.slot(dev_a).host_socket)
        node.harness.stop_agent()
        adoptions: list[str] = []
        # The window, held open: the agent's adoption has not run yet.
        monkeypatch.setattr("cni.replay.adopt", lambda _ctx, name: adoptions.append(name))
        node.harness.start_agent()
        for pool in VPP_POOLS:
            node.harness.wait_devices(resource(pool), all_healthy)
        assert adoptions == ["vpp"]
        backend = node.agent.vswitches["vpp"]
        assert backend.remembered() == ()
        owners = {p.device_id: p.owner for p in backend.ports()}
        assert set(owners) == {dev_a, dev_b}
        assert not owners[dev_a].container_id and not owners[dev_a].ifname  # not known

        assert_ok(node.cni("DEL", conf_a, "c-pod-a", "pod-a"))
        assert set(node.vpp_tags()) == {dev_b}
        assert not os.path.lexists(sock_a)
        assert node.records() == [dev_b] and len(node.leases()) == 1

        assert_ok(node.cni("CHECK", conf_b, "c-pod-b", "pod-b", ns_b.path))
        gc = node.cni("GC", {**node.netconf("pod-b", VHOST), "cni.dev/valid-attachments": []},
                      "", "")
        assert_ok(gc)
    assert node.vpp_tags() == {} and node.vpp_socket_ids() == {}
    assert node.vpp_bridge_domains() == {}
    assert node.records() == [] and node.leases() == []


def test_a_record_contradicted_by_the_ports_owner_tags_does_not_remove_the_port(
        vpp_node: VppNode, pod_ns: NetNS):
    # The empty owner counts as the record's; a known, different one never does.
    node = vpp_node
    device_id, conf = plug_pod(node, "pod-a", MEMIF, pod_ns)
    records = node.agent.cni_service.context.records
    records.put(replace(records.get(device_id), container_id="c-other"))
    assert_ok(node.cni("DEL", conf, "c-other", "pod-a"))
    assert set(node.vpp_tags()) == {device_id}  # pod-a's port, by its owner tags
    assert_ok(node.cni("DEL", conf, "c-pod-a", "pod-a"))
    assert node.vpp_tags() == {} and node.records() == [] and node.leases() == []


def test_agent_restart_while_vpp_is_down_plugs_the_recorded_ports_when_it_returns(
        vpp_node: VppNode, pod_ns: NetNS):
    node = vpp_node
    device_id, conf = plug_pod(node, "pod-a", MEMIF, pod_ns)
    node.harness.stop_agent()
    node.vpp.crash()  # VPP restarts while no agent runs: it comes back empty, later

    node.harness.start_agent()
    for pool in VPP_POOLS:
        node.harness.wait_devices(resource(pool), none_healthy)
    node.vpp.clear_calls()
    node.vpp.start()
    node.harness.wait_devices(resource(MEMIF), all_healthy)
    # The new backend remembered nothing; the agent's adoption plugged the record again,
    # once, before the slots turned Healthy.
    assert set(node.vpp_tags()) == {device_id}
    assert len(node.vpp.calls_named("memif_create_v2")) == 1
    assert node.agent.vswitches["vpp"].remembered() == (device_id,)
    assert_ok(node.cni("CHECK", conf, "c-pod-a", "pod-a", pod_ns.path))
    assert_ok(node.cni("DEL", conf, "c-pod-a", "pod-a"))
    assert node.vpp_tags() == {} and node.records() == [] and node.leases() == []


# -- 4. no VPP at agent start ------------------------------------------------------------------


@pytest.mark.ovs
def test_an_absent_vpp_neither_stops_the_agent_nor_holds_up_ovs_pools(
        private_ovs: PrivateOvs, pod_ns: NetNS):  # noqa: F811
    require_host_local()
    bridge = unique_bridge("ve")
    node = make_node(start_vpp=False)
    api_socket = Path(node.vpp.api_socket)
    extra = (f"  - {{name: {VHOST_OVS}, kind: vhost-user, vswitch: ovs, mode: server, "
             "slotsPerNode: 2}\n")
    node.harness.config_text = config_text(api_socket, extra,
                                           ovs=f"{{db: \"{private_ovs.db}\", bridge: {bridge}}}")
    try:
        node.harness.start()  # returns although VPP's API socket does not exist
        node.start_pod_resources()
        node.harness.wait_devices(resource(VHOST_OVS), all_healthy)
        for pool in VPP_POOLS:
            devices = node.harness.wait_devices(resource(pool), none_healthy)
            assert len(devices) == 2
        state = node.agent.vswitch_monitor.states()["vpp"]
        assert not state.healthy and str(api_socket) in state.reason

        # OVS pods are plumbed meanwhile; a VPP pod is told to retry, leaving nothing.
        with netns("nnve") as ns_o:
            ovs_id, ovs_conf = plug_pod(node, "pod-o", VHOST_OVS, ns_o)
            assert [p.device_id for p in node.agent.vswitches["ovs"].ports()
                    if p.network == bridge] == [ovs_id]
            # The kubelet gives out no Unhealthy device.
            with pytest.raises(StandinError, match="0 available"):
                node.admit("pod-v", MEMIF)

            # VPP appears; nobody pokes the agent: its backend was retrying all along.
            node.vpp.start()
            for pool in VPP_POOLS:
                node.harness.wait_devices(resource(pool), all_healthy)
            node.harness.wait_devices(resource(VHOST_OVS), all_healthy)
            vpp_id = node.admit("pod-v", MEMIF)
            assert_ok(node.cni("ADD", node.netconf("pod-v", MEMIF), "c-pod-v", "pod-v",
                               pod_ns.path))
            assert set(node.vpp_tags()) == {vpp_id}

            assert_ok(node.cni("DEL", node.netconf("pod-v", MEMIF), "c-pod-v", "pod-v"))
            assert_ok(node.cni("DEL", ovs_conf, "c-pod-o", "pod-o"))
        assert node.vpp_tags() == {} and node.records() == [] and node.leases() == []
    finally:
        stop_node(node)
        private_ovs.vsctl("--if-exists", "del-br", bridge, wait=False)
