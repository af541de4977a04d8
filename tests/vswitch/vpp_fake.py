"""A stand-in for VPP's binary API, for the unit tests of vswitch.vpp.

VPP cannot be installed here, so this plays VPP's part of the protocol: it listens on a
unix socket like VPP's ``/run/vpp/api.sock`` and speaks the socket transport the real
``vpp_papi.VPPApiClient`` uses (16-byte frame header, ``sockclnt_create`` with the message
table, ``get_api_json`` bootstrap, ``control_ping`` after dumps). Every request is
decoded, and every reply encoded, with VPP's published message definitions stored in
``vpp_api/`` (VPP 24.02: names, field names and types, CRCs), so a call the backend gets
wrong in name, argument name or type fails as it would against VPP: vpp_papi refuses
unknown arguments and unencodable values, and a message whose name or CRC is not in the
table does not exist for the client.

The handlers follow VPP's own code for the calls numanet makes (memif_api.c/memif.c,
vhost_user.c, l2_api.c/l2_bd.c, interface_api.c) including their retval codes, and do the
file-system side effects VPP does: a memif master or vhost-user server creates a real
listening socket at the given path; deleting the last memif on a socket closes the
listener but leaves the file, as VPP does; ``crash()`` closes everything and keeps every
file, like a VPP that died. Each request is recorded in ``calls``.
"""

from __future__ import annotations

import errno
import json
import os
import random
import socket
import stat
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vpp_papi import VPPApiJSONFiles

API_DIR = Path(__file__).parent / "vpp_api"
ALL = 0xFFFFFFFF
_HEADER = struct.Struct(">QII")

# retvals (src/vnet/error.h)
OK = 0
INVALID_SW_IF_INDEX = -2
NO_SUCH_ENTRY = -6
INVALID_VALUE = -7
SYSCALL_ERROR_2 = -12
SYSCALL_ERROR_4 = -14
SUBIF_ALREADY_EXISTS = -68
INVALID_ARGUMENT = -73
UNEXPECTED_INTF_STATE = -74
IF_ALREADY_EXISTS = -79
VALUE_EXIST = -81
ENTRY_ALREADY_EXISTS = -116
BD_ALREADY_EXISTS = -119
BD_IN_USE = -120
BD_NOT_MODIFIABLE = -121
BD_ID_EXCEED_MAX = -122

PLUGIN_FILES = {"memif": "memif.api.json", "vhost_user": "vhost_user.api.json"}


@dataclass(frozen=True)
class Call:
    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class FakeThread:
    id: int
    name: str
    type: str
    cpu_id: int


DEFAULT_THREADS = (FakeThread(0, "vpp_main", "", 0),)


@dataclass
class _Iface:
    sw_if_index: int
    name: str
    kind: str  # local | memif | vhost
    mac: bytes = b"\x00" * 6
    tag: str = ""
    admin_up: bool = False
    mtu: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    addresses: list[str] = field(default_factory=list)


@dataclass
class _SocketFile:
    filename: str
    ref_cnt: int = 0
    is_listener: bool = False
    listener: socket.socket | None = None
    ids: dict[int, int] = field(default_factory=dict)  # memif id -> sw_if_index


@dataclass
class _Memif:
    socket_id: int
    id: int
    role: int
    mode: int
    ring_size: int
    buffer_size: int


@dataclass
class _Vhost:
    sock_filename: str
    is_server: bool
    instance: int
    listener: socket.socket | None = None


@dataclass
class _Bd:
    bd_id: int
    tag: str
    flood: bool
    uu_flood: bool
    forward: bool
    learn: bool
    arp_term: bool
    arp_ufwd: bool
    mac_age: int
    members: dict[int, int] = field(default_factory=dict)  # sw_if_index -> shg


class _State:
    """What one run of VPP holds; a restart starts from a fresh one."""

    def __init__(self) -> None:
        self.ifaces: dict[int, _Iface] = {0: _Iface(0, "local0", "local")}
        self.sockets: dict[int, _SocketFile] = {0: _SocketFile("/run/vpp/memif.sock")}
        self.memifs: dict[int, _Memif] = {}
        self.vhosts: dict[int, _Vhost] = {}
        self.bds: dict[int, _Bd] = {}
        self.next_sw_if_index = 1

    def new_iface(self, name: str, kind: str, mac: bytes) -> _Iface:
        iface = _Iface(self.next_sw_if_index, name, kind, mac)
        self.ifaces[iface.sw_if_index] = iface
        self.next_sw_if_index += 1
        return iface

    def drop_iface(self, sw_if_index: int) -> None:
        self.ifaces.pop(sw_if_index, None)
        for bd in self.bds.values():
            bd.members.pop(sw_if_index, None)


class _Definitions:
    """The message definitions the fake serves, and its message table."""

    def __init__(self, api_dir: Path, plugins: tuple[str, ...], serve_api_json: bool) -> None:
        skip = {f for name, f in PLUGIN_FILES.items() if name not in plugins}
        texts = [resources.files("vpp_papi.data").joinpath("memclnt.api.json").read_text()]
        texts += [
            p.read_text()
            for p in sorted(api_dir.glob("*.api.json"))
            if p.name != "memclnt.api.json" and p.name not in skip
        ]
        self.messages: dict[str, Any] = {}
        self.services: dict[str, Any] = {}
        for text in texts:
            messages, services = VPPApiJSONFiles.process_json_str(text)
            self.messages.update(messages)
            self.services.update(services)
        if not serve_api_json:  # plays a VPP older than 23.10
            for name in ("get_api_json", "get_api_json_reply"):
                self.messages.pop(name)
            self.services.pop("get_api_json")
        self.api_json = json.dumps([json.loads(t) for t in texts])
        # vpp_papi's socket transport sends sockclnt_create as 15 and expects 16 back.
        fixed = {"sockclnt_create": 15, "sockclnt_create_reply": 16}
        self.index: dict[str, int] = dict(fixed)
        next_index = 1
        for name in sorted(self.messages):
            if name in fixed:
                continue
            while next_index in fixed.values():
                next_index += 1
            self.index[name] = next_index
            next_index += 1
        self.name_of = {i: n for n, i in self.index.items()}

    def table(self) -> list[dict[str, Any]]:
        return [
            {"index": i, "name": f"{n}_{self.messages[n].crc[2:]}"} for n, i in self.index.items()
        ]

    def pack(self, name: str, fields: dict[str, Any]) -> bytes:
        return bytes(self.messages[name].pack({"_vl_msg_id": self.index[name], **fields}))


class FakeVpp:
    """Serve VPP's API on ``api_socket``; ``crash()``/``start()`` play a VPP restart."""

    def __init__(
        self,
        api_socket: str,
        *,
        api_dir: Path = API_DIR,
        plugins: tuple[str, ...] = ("memif", "vhost_user"),
        threads: tuple[FakeThread, ...] = DEFAULT_THREADS,
        version: str = "24.02-numanet-fake",
        socket_mode: int | None = None,
        serve_api_json: bool = True,
    ) -> None:
        self.api_socket = api_socket
        self.threads = threads
        self.version = version
        self.socket_mode = socket_mode  # chmod VPP's listeners, e.g. to play a lax umask
        self.defs = _Definitions(api_dir, plugins, serve_api_json)
        self.state = _State()
        self.calls: list[Call] = []
        self.unhandled: list[str] = []
        self._failures: dict[str, list[int]] = {}
        self._lock = threading.RLock()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._next_client = 1

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        if os.path.exists(self.api_socket):
            os.unlink(self.api_socket)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.api_socket)
        listener.listen(8)
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def crash(self) -> None:
        """Stop the way a dying VPP does: sockets close, files stay, state is gone."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self.drop_connections()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        with self._lock:
            for sf in self.state.sockets.values():
                if sf.listener is not None:
                    sf.listener.close()
            for vhost in self.state.vhosts.values():
                if vhost.listener is not None:
                    vhost.listener.close()
            self.state = _State()

    def drop_connections(self) -> None:
        """Close the API connections but keep running (and keep every interface)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def restart(self) -> None:
        self.crash()
        self.start()

    stop = crash

    # -- test controls -----------------------------------------------------------------------

    def fail_next(self, name: str, retval: int, times: int = 1) -> None:
        """Answer the next ``times`` requests ``name`` with ``retval`` and change nothing."""
        with self._lock:
            self._failures.setdefault(name, []).extend([retval] * times)

    def calls_named(self, name: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.name == name]

    def clear_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    # -- protocol ----------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        # A timeout, because closing a socket does not wake a thread blocked in accept().
        listener.settimeout(0.05)
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if self._listener is not listener:
                    return
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    conn.close()
                    return
                self._conns.append(conn)
                client = self._next_client
                self._next_client += 1
            thread = threading.Thread(target=self._serve, args=(conn, client), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket, client: int) -> None:
        try:
            while True:
                msg = _read_frame(conn)
                if msg is None:
                    return
                for reply in self._dispatch(msg, client):
                    conn.sendall(_HEADER.pack(0, len(reply), 0) + reply)
        except OSError:
            return
        finally:
            conn.close()

    def _dispatch(self, msg: bytes, client: int) -> list[bytes]:
        (msg_id,) = struct.unpack_from(">H", msg, 0)
        name = self.defs.name_of.get(msg_id)
        if name is None:
            self.unhandled.append(f"unknown message id {msg_id}")
            return []
        decoded, _ = self.defs.messages[name].unpack(msg)
        args = {
            k: v
            for k, v in decoded._asdict().items()
            if k not in ("_0", "_vl_msg_id", "client_index", "context")
        }
        context = decoded.context
        with self._lock:
            self.calls.append(Call(name, args))
            service = self.defs.services.get(name)
            if service is None:
                self.unhandled.append(f"{name} is not a request")
                return []
            reply_name = service["reply"]
            failures = self._failures.get(name)
            if failures:
                return [self.defs.pack(reply_name, {"context": context, "retval": failures.pop(0)})]
            if name == "sockclnt_create":
                table = self.defs.table()
                fields = {
                    "context": context,
                    "client_index": 0,
                    "response": 0,
                    "index": client,
                    "count": len(table),
                    "message_table": table,
                }
                return [self.defs.pack(reply_name, fields)]
            if service.get("stream"):
                details = self._handler(name)(args)
                return [self.defs.pack(reply_name, {"context": context, **d}) for d in details]
            fields = self._handler(name)(args) if name != "control_ping" else {}
            if name == "control_ping":
                fields = {"retval": 0, "client_index": client, "vpe_pid": os.getpid()}
            return [self.defs.pack(reply_name, {"context": context, **fields})]

    def _handler(self, name: str) -> Callable[[dict[str, Any]], Any]:
        handler = getattr(self, f"_h_{name}", None)
        if handler is None:
            self.unhandled.append(name)
            raise AssertionError(f"the fake VPP has no handler for {name}")
        return handler  # type: ignore[no-any-return]

    # -- memclnt / vpe / vlib ---------------------------------------------------------------------

    def _h_sockclnt_delete(self, a: dict[str, Any]) -> dict[str, Any]:
        return {"response": 0}

    def _h_get_api_json(self, a: dict[str, Any]) -> dict[str, Any]:
        return {"retval": OK, "json": self.defs.api_json}

    def _h_show_version(self, a: dict[str, Any]) -> dict[str, Any]:
        return {
            "retval": OK,
            "program": "vpe",
            "version": self.version,
            "build_date": "today",
            "build_directory": "/fake",
        }

    def _h_show_threads(self, a: dict[str, Any]) -> dict[str, Any]:
        data = [
            {
                "id": t.id,
                "name": t.name,
                "type": t.type,
                "pid": os.getpid(),
                "cpu_id": t.cpu_id,
                "core": t.cpu_id,
                "cpu_socket": 0,
            }
            for t in self.threads
        ]
        return {"retval": OK, "count": len(data), "thread_data": data}

    # -- interface.api -----------------------------------------------------------------------

    def _iface(self, sw_if_index: int) -> _Iface | None:
        return self.state.ifaces.get(int(sw_if_index))

    def _h_sw_interface_set_flags(self, a: dict[str, Any]) -> dict[str, Any]:
        iface = self._iface(a["sw_if_index"])
        if iface is None:
            return {"retval": INVALID_SW_IF_INDEX}
        iface.admin_up = bool(int(a["flags"]) & 1)
        return {"retval": OK}

    def _h_sw_interface_set_mtu(self, a: dict[str, Any]) -> dict[str, Any]:
        iface = self._iface(a["sw_if_index"])
        if iface is None:
            return {"retval": INVALID_SW_IF_INDEX}
        if any(m > 9216 for m in a["mtu"]):
            return {"retval": INVALID_VALUE}
        iface.mtu = [m or old for m, old in zip(a["mtu"], iface.mtu, strict=True)]
        return {"retval": OK}

    def _h_sw_interface_add_del_address(self, a: dict[str, Any]) -> dict[str, Any]:
        iface = self._iface(a["sw_if_index"])
        if iface is None:
            return {"retval": INVALID_SW_IF_INDEX}
        if a["del_all"]:
            iface.addresses.clear()
        elif a["is_add"]:
            iface.addresses.append(str(a["prefix"]))
        elif str(a["prefix"]) in iface.addresses:
            iface.addresses.remove(str(a["prefix"]))
        else:
            return {"retval": -60}  # ADDRESS_NOT_FOUND_FOR_INTERFACE
        return {"retval": OK}

    def _h_sw_interface_tag_add_del(self, a: dict[str, Any]) -> dict[str, Any]:
        iface = self._iface(a["sw_if_index"])
        if iface is None:
            return {"retval": INVALID_SW_IF_INDEX}
        if a["is_add"]:
            if not a["tag"]:
                return {"retval": INVALID_VALUE}
            iface.tag = a["tag"]
        else:
            iface.tag = ""
        return {"retval": OK}

    def _h_sw_interface_dump(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        wanted = int(a["sw_if_index"])
        out = []
        for iface in sorted(self.state.ifaces.values(), key=lambda i: i.sw_if_index):
            if a["name_filter_valid"]:
                if a["name_filter"] not in iface.name:
                    continue
            elif wanted not in (0, ALL) and iface.sw_if_index != wanted:
                continue
            out.append(
                {
                    "sw_if_index": iface.sw_if_index,
                    "sup_sw_if_index": iface.sw_if_index,
                    "l2_address": iface.mac,
                    "flags": 1 if iface.admin_up else 0,
                    "type": 0,
                    "link_duplex": 0,
                    "link_speed": 0,
                    "link_mtu": 9000,
                    "mtu": list(iface.mtu),
                    "interface_name": iface.name,
                    "interface_dev_type": {"memif": "memif", "vhost": "VirtualEthernet"}.get(
                        iface.kind, "local"
                    ),
                    "tag": iface.tag,
                }
            )
        return out

    # -- l2.api --------------------------------------------------------------------------------

    def _h_bridge_domain_add_del_v2(self, a: dict[str, Any]) -> dict[str, Any]:
        bd_id = int(a["bd_id"])
        bds = self.state.bds
        if a["is_add"]:
            if bd_id == ALL:
                bd_id = next(i for i in range(1, 1 << 24) if i not in bds)
            if bd_id in bds:
                return {"retval": BD_ALREADY_EXISTS, "bd_id": bd_id}
            if bd_id == 0:
                return {"retval": BD_NOT_MODIFIABLE, "bd_id": bd_id}
            if bd_id > (1 << 24) - 1:
                return {"retval": BD_ID_EXCEED_MAX, "bd_id": bd_id}
            bds[bd_id] = _Bd(
                bd_id,
                a["bd_tag"],
                a["flood"],
                a["uu_flood"],
                a["forward"],
                a["learn"],
                a["arp_term"],
                a["arp_ufwd"],
                a["mac_age"],
            )
            return {"retval": OK, "bd_id": bd_id}
        if bd_id == 0:
            return {"retval": BD_NOT_MODIFIABLE, "bd_id": bd_id}
        bd = bds.get(bd_id)
        if bd is None:
            return {"retval": NO_SUCH_ENTRY, "bd_id": bd_id}
        if bd.members:
            return {"retval": BD_IN_USE, "bd_id": bd_id}
        del bds[bd_id]
        return {"retval": OK, "bd_id": bd_id}

    def _h_bridge_domain_dump(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        wanted = int(a["bd_id"])
        out = []
        for bd in sorted(self.state.bds.values(), key=lambda b: b.bd_id):
            if wanted != ALL and bd.bd_id != wanted:
                continue
            members = [
                {"context": 0, "sw_if_index": sw, "shg": shg}
                for sw, shg in sorted(bd.members.items())
            ]
            out.append(
                {
                    "bd_id": bd.bd_id,
                    "flood": bd.flood,
                    "uu_flood": bd.uu_flood,
                    "forward": bd.forward,
                    "learn": bd.learn,
                    "arp_term": bd.arp_term,
                    "arp_ufwd": bd.arp_ufwd,
                    "mac_age": bd.mac_age,
                    "bd_tag": bd.tag,
                    "bvi_sw_if_index": ALL,
                    "uu_fwd_sw_if_index": ALL,
                    "n_sw_ifs": len(members),
                    "sw_if_details": members,
                }
            )
        return out

    def _h_sw_interface_set_l2_bridge(self, a: dict[str, Any]) -> dict[str, Any]:
        sw_if_index = int(a["rx_sw_if_index"])
        if self._iface(sw_if_index) is None:
            return {"retval": INVALID_SW_IF_INDEX}
        for bd in self.state.bds.values():
            bd.members.pop(sw_if_index, None)
        if a["enable"]:
            bd_id = int(a["bd_id"])
            if bd_id > (1 << 24) - 1:
                return {"retval": BD_ID_EXCEED_MAX}
            # VPP finds or adds the bridge domain (bd_find_or_add_bd_index).
            bd = self.state.bds.setdefault(
                bd_id, _Bd(bd_id, "", True, True, True, True, False, False, 0)
            )
            bd.members[sw_if_index] = int(a["shg"])
        return {"retval": OK}

    # -- memif.api -----------------------------------------------------------------------------

    def _h_memif_socket_filename_add_del_v2(self, a: dict[str, Any]) -> dict[str, Any]:
        socket_id = int(a["socket_id"])
        filename = a["socket_filename"]
        sockets = self.state.sockets
        if socket_id == 0:
            return {"retval": INVALID_ARGUMENT, "socket_id": socket_id}
        if a["is_add"] and socket_id == ALL:
            socket_id = next(i for i in range(1, ALL) if i not in sockets)
        if not a["is_add"]:
            sf = sockets.get(socket_id)
            if sf is None:
                return {"retval": INVALID_ARGUMENT, "socket_id": socket_id}
            if sf.ref_cnt > 0:
                return {"retval": UNEXPECTED_INTF_STATE, "socket_id": socket_id}
            del sockets[socket_id]
            return {"retval": OK, "socket_id": socket_id}
        if not filename:
            return {"retval": INVALID_ARGUMENT, "socket_id": socket_id}
        directory = os.path.dirname(filename)
        if not filename.startswith("/") or not os.access(directory, os.R_OK | os.W_OK):
            return {"retval": INVALID_ARGUMENT, "socket_id": socket_id}
        existing = sockets.get(socket_id)
        if existing is not None:
            retval = OK if existing.filename == filename else ENTRY_ALREADY_EXISTS
            return {"retval": retval, "socket_id": socket_id}
        sockets[socket_id] = _SocketFile(filename)
        return {"retval": OK, "socket_id": socket_id}

    def _h_memif_create_v2(self, a: dict[str, Any]) -> dict[str, Any]:
        ring_size = int(a["ring_size"]) or 1024
        if ring_size & (ring_size - 1):
            return {"retval": INVALID_ARGUMENT, "sw_if_index": ALL}
        sf = self.state.sockets.get(int(a["socket_id"]))
        if sf is None:
            return {"retval": INVALID_ARGUMENT, "sw_if_index": ALL}
        is_master = int(a["role"]) == 0
        if sf.ref_cnt > 0 and (sf.is_listener != is_master or int(a["id"]) in sf.ids):
            return {"retval": SUBIF_ALREADY_EXISTS, "sw_if_index": ALL}
        if sf.ref_cnt == 0:
            if is_master and os.path.lexists(sf.filename):
                if not stat.S_ISSOCK(os.lstat(sf.filename).st_mode):
                    return {"retval": VALUE_EXIST, "sw_if_index": ALL}
                os.unlink(sf.filename)
            sf.is_listener = is_master
        mode = int(a["mode"])
        mac = bytes(a["hw_addr"].packed) if mode == 0 else b"\x00" * 6
        if mode == 0 and mac == b"\x00" * 6:
            mac = b"\x02\xfe" + random.randbytes(4)
        if is_master and sf.ref_cnt == 0:
            try:
                sf.listener = self._listen(sf.filename, socket.SOCK_SEQPACKET)
            except OSError:
                return {"retval": SYSCALL_ERROR_4, "sw_if_index": ALL}
        iface = self.state.new_iface(f"memif{a['socket_id']}/{a['id']}", "memif", mac)
        self.state.memifs[iface.sw_if_index] = _Memif(
            int(a["socket_id"]),
            int(a["id"]),
            int(a["role"]),
            mode,
            ring_size,
            int(a["buffer_size"]) or 2048,
        )
        sf.ids[int(a["id"])] = iface.sw_if_index
        sf.ref_cnt += 1
        return {"retval": OK, "sw_if_index": iface.sw_if_index}

    def _h_memif_delete(self, a: dict[str, Any]) -> dict[str, Any]:
        sw_if_index = int(a["sw_if_index"])
        memif = self.state.memifs.pop(sw_if_index, None)
        if memif is None:
            return {"retval": INVALID_SW_IF_INDEX}
        self.state.drop_iface(sw_if_index)
        sf = self.state.sockets[memif.socket_id]
        sf.ids.pop(memif.id, None)
        sf.ref_cnt -= 1
        if sf.ref_cnt == 0 and sf.listener is not None:
            sf.listener.close()  # VPP closes the listener and leaves the file on disk
            sf.listener = None
        return {"retval": OK}

    def _h_memif_socket_filename_dump(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"socket_id": i, "socket_filename": sf.filename}
            for i, sf in sorted(self.state.sockets.items())
        ]

    def _h_memif_dump(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for sw_if_index, m in sorted(self.state.memifs.items()):
            iface = self.state.ifaces[sw_if_index]
            out.append(
                {
                    "sw_if_index": sw_if_index,
                    "hw_addr": iface.mac,
                    "id": m.id,
                    "role": m.role,
                    "mode": m.mode,
                    "zero_copy": m.role == 1,
                    "socket_id": m.socket_id,
                    "ring_size": m.ring_size,
                    "buffer_size": m.buffer_size,
                    "flags": 1 if iface.admin_up else 0,
                    "if_name": iface.name,
                }
            )
        return out

    # -- vhost_user.api ------------------------------------------------------------------------

    def _h_create_vhost_user_if_v2(self, a: dict[str, Any]) -> dict[str, Any]:
        path = a["sock_filename"]
        if not path:
            return {"retval": INVALID_ARGUMENT, "sw_if_index": ALL}
        for sw_if_index, vhost in self.state.vhosts.items():
            if vhost.sock_filename == path:
                return {"retval": IF_ALREADY_EXISTS, "sw_if_index": sw_if_index}
        listener = None
        if a["is_server"]:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError:
                return {"retval": SYSCALL_ERROR_2, "sw_if_index": ALL}
            try:
                listener = self._listen(path, socket.SOCK_STREAM)
            except OSError:
                return {"retval": SYSCALL_ERROR_2, "sw_if_index": ALL}
        used = {v.instance for v in self.state.vhosts.values()}
        instance = next(i for i in range(1 << 20) if i not in used)
        mac = bytes(a["mac_address"].packed) if a["use_custom_mac"] else b""
        if not mac or mac == b"\x00" * 6:
            mac = b"\x02\xfe" + random.randbytes(4)
        iface = self.state.new_iface(f"VirtualEthernet0/0/{instance}", "vhost", mac)
        iface.tag = a["tag"]
        self.state.vhosts[iface.sw_if_index] = _Vhost(
            path, bool(a["is_server"]), instance, listener
        )
        return {"retval": OK, "sw_if_index": iface.sw_if_index}

    def _h_delete_vhost_user_if(self, a: dict[str, Any]) -> dict[str, Any]:
        sw_if_index = int(a["sw_if_index"])
        vhost = self.state.vhosts.pop(sw_if_index, None)
        if vhost is None:
            return {"retval": INVALID_SW_IF_INDEX}
        if vhost.listener is not None:
            vhost.listener.close()
            try:
                os.unlink(vhost.sock_filename)  # vhost_user_term_if unlinks the server socket
            except OSError:
                pass
        self.state.drop_iface(sw_if_index)
        return {"retval": OK}

    def _h_sw_interface_vhost_user_dump(self, a: dict[str, Any]) -> list[dict[str, Any]]:
        wanted = int(a["sw_if_index"])
        return [
            {
                "sw_if_index": sw,
                "interface_name": self.state.ifaces[sw].name,
                "virtio_net_hdr_sz": 0,
                "features_first_32": 0,
                "features_last_32": 0,
                "is_server": v.is_server,
                "sock_filename": v.sock_filename,
                "num_regions": 0,
                "sock_errno": 0,
            }
            for sw, v in sorted(self.state.vhosts.items())
            if wanted == ALL or sw == wanted
        ]

    # -- helpers -------------------------------------------------------------------------------

    def _listen(self, path: str, kind: int) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, kind)
        try:
            sock.bind(path)
            sock.listen(1)
        except OSError:
            sock.close()
            raise
        if self.socket_mode is not None:
            os.chmod(path, self.socket_mode)
        return sock


def _read_frame(conn: socket.socket) -> bytes | None:
    header = _read_exact(conn, _HEADER.size)
    if header is None:
        return None
    _, length, _ = _HEADER.unpack(header)
    return _read_exact(conn, length)


def _read_exact(conn: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        try:
            chunk = conn.recv(size - len(chunks))
        except OSError as exc:
            if exc.errno in (errno.EBADF, errno.ECONNRESET, errno.ENOTCONN):
                return None
            raise
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)
