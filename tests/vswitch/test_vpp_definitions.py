"""The messages the VPP backend sends are VPP 24.02's, as stored in vpp_api/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from vpp_papi import VPPApiJSONFiles

import vswitch.vpp
from tests.vswitch.vpp_fake import API_DIR, FakeVpp

# name -> CRC of VPP 24.02 (GoVPP binapi for 24.02-release; VPP's generated C headers).
VPP_2402_CRCS = {
    "memif_socket_filename_add_del_v2": "0x34223bdf",
    "memif_create_v2": "0x8c7de5f7",
    "memif_delete": "0xf9e6675e",
    "memif_dump": "0x51077d14",
    "memif_details": "0xda34feb9",
    "memif_socket_filename_dump": "0x51077d14",
    "memif_socket_filename_details": "0x7ff326f7",
    "create_vhost_user_if_v2": "0xdba1cc1d",
    "delete_vhost_user_if": "0xf9e6675e",
    "sw_interface_vhost_user_dump": "0xf9e6675e",
    "sw_interface_vhost_user_details": "0x0cee1e53",
    "sw_interface_set_flags": "0xf5aec1b8",
    "sw_interface_set_mtu": "0x5cbe85e5",
    "sw_interface_add_del_address": "0x5463d73b",
    "sw_interface_tag_add_del": "0x426f8bc1",
    "sw_interface_dump": "0xaa610c27",
    "sw_interface_details": "0x6c221fc7",
    "bridge_domain_add_del_v2": "0x600b7170",
    "bridge_domain_add_del_v2_reply": "0xfcb1e980",
    "bridge_domain_dump": "0x74396a43",
    "bridge_domain_details": "0x0fa506fd",
    "sw_interface_set_l2_bridge": "0xd0678b13",
    "show_threads": "0x51077d14",
    "show_threads_reply": "0xefd78e83",
    "show_version": "0x51077d14",
    "show_version_reply": "0xc919bde1",
    "control_ping": "0x51077d14",
}
# Every way the backend names a message: conn.call/dump/offers and Snapshot._plugin_dump.
_SENT = re.compile(r"\.(?:call|dump|offers|_plugin_dump)\(\s*\"([a-z0-9_]+)\"")


def messages_the_backend_sends() -> set[str]:
    package = Path(vswitch.vpp.__file__).parent
    return {m for path in package.glob("*.py") for m in _SENT.findall(path.read_text())}


@pytest.fixture(scope="module")
def definitions() -> tuple[dict, dict]:
    _, messages, services = VPPApiJSONFiles.load_api(apidir=str(API_DIR))
    return messages, services


def test_every_message_the_backend_sends_is_defined_with_vpps_crc(definitions):
    messages, services = definitions
    sent = messages_the_backend_sends()
    assert "memif_create_v2" in sent and "create_vhost_user_if_v2" in sent  # the scan works
    assert {"memif_dump", "memif_socket_filename_dump", "sw_interface_vhost_user_dump"} <= sent
    for name in sorted(sent):
        assert name in services, f"{name} is not a request in vpp_api/"
        assert messages[name].crc == VPP_2402_CRCS[name], name
        reply = services[name]["reply"]
        if reply in VPP_2402_CRCS:
            assert messages[reply].crc == VPP_2402_CRCS[reply], reply


def test_the_stand_in_answers_every_message_the_backend_sends(tmp_path):
    fake = FakeVpp(str(tmp_path / "api.sock"))
    for name in messages_the_backend_sends():
        if name not in ("control_ping",):
            assert hasattr(fake, f"_h_{name}"), f"the stand-in VPP cannot answer {name}"
