"""Packets through ports numanet plugged: dpdk-testpmd on the slots' sockets, OVS between.

One testpmd in io mode owns both container ends; OVS forwards port 1 -> 2 and back, so
every packet testpmd receives on one port was sent on the other and crossed OVS.
Figures (kpps per port) go to the test output (``-s``) and the junit properties.
"""

from __future__ import annotations

import re
import subprocess
import time
from functools import partial
from typing import Any

import pytest
from helpers.ovs import eventually, interface, make_slot
from helpers.testpmd import TestPmd, memif, require_testpmd, virtio_user

from vswitch.api import Owner, PluggedPort, PortKind, PortSpec

pytestmark = [pytest.mark.ovs, pytest.mark.datapath]

RUN_SECONDS = 2.0
MIN_PACKETS = 10_000  # tx_first injects 16 bursts of 32; forwarding must multiply them


def _iface(bench, name: str) -> dict[str, Any]:
    row = interface(bench.ovs, name)
    assert row is not None, f"no Interface row {name}"
    return row


def _link_up(bench, name: str) -> bool:
    return bool(_iface(bench, name)["link_state"] == "up")


def _plug_pair(bench, prefix: str, kind: PortKind, role: str) -> list[PluggedPort]:
    """Plug two slots with flows between their OVS ports (1 -> 2, 2 -> 1)."""
    ofports = []
    pair = []
    for i in range(2):
        device_id = f"{prefix}-n0-{i:03d}"
        slot = make_slot(bench.slots, device_id)
        plugged = bench.switch.plug(
            PortSpec(
                device_id=device_id,
                kind=kind,
                container_role=role,
                socket_path=str(slot / "sock"),
                network=bench.bridge,
                owner=Owner("dp", f"pod-{i}", f"cid-{i}", "net1"),
            )
        )
        ofports.append(_iface(bench, plugged.port_name)["ofport"])
        pair.append(plugged)
    flows = [
        f"in_port={ofports[0]},actions=output:{ofports[1]}",
        f"in_port={ofports[1]},actions=output:{ofports[0]}",
    ]
    subprocess.run(["ovs-ofctl", "del-flows", bench.bridge], env=bench.ovs.env, check=True)
    for flow in flows:
        subprocess.run(["ovs-ofctl", "add-flow", bench.bridge, flow], env=bench.ovs.env, check=True)
    return pair


def _datapath_flows(bench) -> list[int]:
    """Packet counts of OVS's datapath flows (what its PMD really forwarded)."""
    out = subprocess.run(
        ["ovs-appctl", "-t", bench.ovs.vswitchd_ctl, "dpctl/dump-flows"],
        env=bench.ovs.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [int(n) for n in re.findall(r"packets:(\d+)", out)]


def _run_traffic(pmd: TestPmd, bench, pair: list[PluggedPort], record_property, label: str):
    link_seconds = pmd.wait_link_up()
    for name in (p.port_name for p in pair):
        eventually(partial(_link_up, bench, name), timeout=10)
    pmd.start(tx_first=16)
    time.sleep(RUN_SECONDS)
    elapsed = time.monotonic() - (pmd.started_at or 0)
    stats = pmd.stop()
    kpps = [round(stats[p].rx / elapsed / 1000) for p in (0, 1)]
    print(
        f"\n{label}: link up {link_seconds:.1f} s, RX kpps port0={kpps[0]} port1={kpps[1]} "
        f"({stats})"
    )
    record_property(f"{label}_kpps", kpps)
    # Both directions crossed OVS: each port received what the other sent.
    assert stats[0].rx >= MIN_PACKETS and stats[1].rx >= MIN_PACKETS
    assert stats[0].tx >= MIN_PACKETS and stats[1].tx >= MIN_PACKETS
    # ... and OVS's PMD forwarded them: one datapath flow per direction carried them.
    flows = sorted(_datapath_flows(bench), reverse=True)
    assert len(flows) >= 2 and flows[1] >= MIN_PACKETS
    return stats


def test_vhost_user_container_server_both_ways(ovs_bench, record_property):
    require_testpmd()
    pair = _plug_pair(ovs_bench, "dpv", "vhost-user", "server")
    with TestPmd([virtio_user(i, p.socket_path, server=True) for i, p in enumerate(pair)]) as pmd:
        _run_traffic(pmd, ovs_bench, pair, record_property, "dpdkvhostuserclient")


def test_vhost_user_container_client_through_linked_socket(ovs_bench, record_property):
    # OVS serves the socket (dpdkvhostuser); testpmd connects through the slot's hard link.
    require_testpmd()
    pair = _plug_pair(ovs_bench, "dpc", "vhost-user", "client")
    with TestPmd([virtio_user(i, p.socket_path, server=False) for i, p in enumerate(pair)]) as pmd:
        _run_traffic(pmd, ovs_bench, pair, record_property, "dpdkvhostuser")


def test_memif_container_slave_both_ways(ovs_bench, record_property):
    # OVS is the memif master (creates the sockets); testpmd's net_memif connects as client
    # with the queue pairs the plug asked for (OVS's PMD sends on queue 1, not 0).
    require_testpmd()
    pair = _plug_pair(ovs_bench, "dpm", "memif", "slave")
    queues = int(pair[0].tags["numanet-memif-queues"])
    assert queues >= 2
    with TestPmd(
        [memif(i, p.socket_path, role="client") for i, p in enumerate(pair)],
        extra_args=(f"--rxq={queues}", f"--txq={queues}"),
    ) as pmd:
        _run_traffic(pmd, ovs_bench, pair, record_property, "memif")
