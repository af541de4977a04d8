"""Fuzzing the CNI against the real agent: hostile environments and stdin through the
real ``numanet-cni`` shim, and hostile frames straight on the agent's socket.

``CniFuzzer`` runs one case at a time against a running CNI test bed and checks, after
each, what every caller is owed:

- the answer is a CNI result (exit 0) or a CNI error JSON (exit 1) whose code is one of
  the spec's or numanet's documented ones, never 199 ("numanet bug"), never a traceback
  (the shim's output, the agent's log, a call thread dying);
- the agent still answers on its socket;
- nothing is left behind: a successful ADD is followed by the DEL of the same call, which
  must succeed, and then no record, port, lease, container file or device-info file
  remains. A device left with state is probed with a valid ADD and DEL; one whose ADD
  fails is *wedged*;
- no file appears in the trap directory (absolute paths outside the agent's directories
  that the cases name) nor under the agent's working directory (where relative paths
  would land).

tests/cni/test_fuzz.py runs a bounded, derandomized set of cases in ``make test``;
``make fuzz`` runs random ones for as long as asked and prints ``Figures``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from cni import errors, shim
from cni.request import ENV_NAMES
from cni.service import decode_call
from helpers.cni_shim import SHIM

# What a caller may be answered: the spec's codes and numanet's documented ones (never 199).
ANSWER_CODES = frozenset({
    errors.INCOMPATIBLE_VERSION, errors.UNSUPPORTED_FIELD, errors.UNKNOWN_CONTAINER,
    errors.INVALID_ENVIRONMENT, errors.IO_FAILURE, errors.DECODE_FAILURE,
    errors.INVALID_NETWORK_CONFIG, errors.TRY_AGAIN_LATER, errors.PLUGIN_NOT_AVAILABLE,
    errors.PLUGIN_NOT_AVAILABLE_LIMITED, errors.DEVICE_NOT_ALLOCATED, errors.UNKNOWN_DEVICE,
    errors.DEVICE_MISMATCH, errors.VSWITCH_FAILURE, errors.IPAM_FAILURE, errors.CHECK_FAILED,
})
COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")
POD = ("default", "pod-fuzz")
MAX_LISTED = 20  # failures kept with their case, for the report


@dataclass
class Figures:
    """What a fuzz run found, per target."""

    cases: int = 0
    succeeded: int = 0  # calls answered with exit 0
    failures: int = 0  # cases that broke a rule above
    tracebacks: int = 0
    wedged: set[str] = field(default_factory=set)
    examples: list[str] = field(default_factory=list)

    def line(self, name: str, seconds: float) -> str:
        wedged = f" {sorted(self.wedged)}" if self.wedged else ""
        return (f"{name}: {self.cases} cases in {seconds:.0f} s ({self.succeeded} succeeded), "
                f"{self.failures} failures, {self.tracebacks} tracebacks, "
                f"{len(self.wedged)} wedged devices{wedged}")


@dataclass(frozen=True)
class Place:
    """Where the cases aim: the bed's paths, and the directories nothing may appear in."""

    socket: Path
    netns: str
    ipam_dir: Path
    devinfo_dir: Path  # <devinfo root>/cni, the one place device-info files may go
    trap: Path  # absolute, outside every directory of the agent's
    cwd: Path  # holds the agent's working directory during the run, a few levels down
    workdir: Path  # that working directory (relative paths with '..' stay under ``cwd``)
    bridge: str
    network: str
    devices: tuple[str, ...]


# -- strategies -------------------------------------------------------------------------------


def _pod_args() -> bytes:
    return f"K8S_POD_NAMESPACE={POD[0]};K8S_POD_NAME={POD[1]}".encode()


def _no_nul(data: bytes) -> bytes:
    return data.replace(b"\0", b"")


def hostile_text(place: Place) -> st.SearchStrategy[str]:
    """Strings aimed at paths, parsers and names."""
    devinfo, trap = str(place.devinfo_dir), str(place.trap)
    return st.one_of(
        st.text(max_size=40),
        st.sampled_from([
            "", ".", "..", "../../x", "relative/dir", "/", "//", "\n", "a\nb", "\u0000",
            "\ud800", "x\udcff", "\u202e", "x" * 300, "é" * 200, "/" + "x" * 300,
            f"{trap}/x.json", f"{trap}/dir/x", f"{devinfo}/../../x.json", f"{devinfo}/../dp/x.json",
            f"{devinfo}/{'y' * 300}.json", f"{devinfo}/sub/x.json", f"{devinfo}/ok.json",
            f"{devinfo}/./ok.json", f"{devinfo}//ok.json", f"{devinfo}/ok.json/",
            f"{devinfo}/x\u0000.json", f"{devinfo}/\ud800.json", devinfo, "/dev/null",
            "/proc/self/fd/0", f"{place.ipam_dir}/../escape", f"{place.ipam_dir}/./x",
            "../../etc/passwd", "ipam-data", "\\x00", "%s%n", "${HOME}",
        ]),
    )


def json_values(place: Place) -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                       st.floats(), hostile_text(place))
    return st.recursive(leaves, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)),
        max_leaves=6)


_TOP_KEYS = ("cniVersion", "name", "type", "ipam", "dns", "args", "capabilities",
             "runtimeConfig", "prevResult", "pool", "resourceName", "bridge", "mtu", "vlan",
             "deviceID", "cni.dev/valid-attachments", "disableCheck", "pciBusID", "other")
_IPAM_KEYS = ("type", "dataDir", "ranges", "routes", "subnet", "resolvConf")
_RUNTIME_KEYS = ("deviceID", "CNIDeviceInfoFile", "mac", "portMappings")


def base_config(place: Place, device: str) -> dict[str, Any]:
    return {"cniVersion": "1.1.0", "name": place.network, "type": "numanet",
            "bridge": place.bridge, "deviceID": device,
            "ipam": {"type": "host-local", "dataDir": str(place.ipam_dir),
                     "ranges": [[{"subnet": "10.91.0.0/24"}]]},
            "runtimeConfig": {"CNIDeviceInfoFile": f"{place.devinfo_dir}/{device}.json"}}


@st.composite
def configs(draw: st.DrawFn, place: Place) -> bytes:
    """stdin: a good config with a few hostile changes, or bytes that are no config."""
    kind = draw(st.sampled_from(("mutated",) * 6 + ("raw", "deep", "big", "escaped")))
    if kind == "raw":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        opener = draw(st.sampled_from([b"[", b'{"a":', b'{"cniVersion":"1.1.0","args":[']))
        return opener * draw(st.integers(min_value=60, max_value=20000))
    device = draw(st.sampled_from(place.devices + ("ghost-n0-000", "../x", "")))
    doc: dict[str, Any] = base_config(place, device)
    if kind == "big":
        size = draw(st.sampled_from([(1 << 20) - 400, (1 << 20) + 1, 3 << 20, 10_000_000]))
        return json.dumps(doc).encode()[:-1] + b', "pad": "' + b"p" * size + b'"}'
    if kind == "escaped":  # JSON escapes Python would not write: lone surrogates, NULs
        key = draw(st.sampled_from(("name", "deviceID", "bridge", "pool")))
        value = draw(st.sampled_from(["\\ud800", "\\udcff", "x\\u0000", "\\uffff"]))
        text = json.dumps({**doc, key: "@@"}).replace('"@@"', f'"{value}"')
        return text.encode()
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        where = draw(st.sampled_from(("top", "top", "ipam", "runtime")))
        value = draw(json_values(place))
        if where == "top":
            key = draw(st.sampled_from(_TOP_KEYS))
            doc[key] = value
        else:
            section = "ipam" if where == "ipam" else "runtimeConfig"
            keys = _IPAM_KEYS if where == "ipam" else _RUNTIME_KEYS
            if not isinstance(doc.get(section), dict):
                doc[section] = {}
            doc[section][draw(st.sampled_from(keys))] = value
    if draw(st.booleans()):
        doc.pop(draw(st.sampled_from(_TOP_KEYS)), None)
    return json.dumps(doc).encode()


@st.composite
def environments(draw: st.DrawFn, place: Place) -> dict[bytes, bytes]:
    """The CNI_* environment: each variable good, missing, or hostile bytes."""
    def pick(good: list[bytes]) -> bytes | None:
        choice = draw(st.sampled_from(("good", "good", "good", "missing", "hostile")))
        if choice == "good":
            return draw(st.sampled_from(good))
        if choice == "missing":
            return None
        return draw(st.one_of(st.binary(max_size=80).map(_no_nul),
                              hostile_text(place).map(
                                  lambda s: _no_nul(s.encode("utf-8", "surrogatepass")))))

    pod = _pod_args()
    values = {
        b"CNI_COMMAND": pick([c.encode() for c in COMMANDS]),
        b"CNI_CONTAINERID": pick([b"fz1", b"fz2", b"f" * 256]),
        b"CNI_NETNS": pick([place.netns.encode(), b"/proc/1/ns/net", b"/dev/null",
                            str(place.trap).encode() + b"/netns"]),
        b"CNI_IFNAME": pick([b"net1", b"eth0", b"n" * 15, b"n" * 16, b"net\xff"]),
        b"CNI_ARGS": pick([b"IgnoreUnknown=1;" + pod, pod, pod + b";MAC=02:00:00:00:00:42",
                           pod + b";K8S_POD_NAME=other", b"IgnoreUnknown=1;" + pod + b";X=\xff"]),
        b"CNI_PATH": pick([b"/usr/lib/cni", b"/nowhere:/usr/lib/cni", b"/usr/lib/cni:" +
                           b"/" + b"d" * 300]),
    }
    return {k: v for k, v in values.items() if v is not None}


@st.composite
def frames(draw: st.DrawFn, place: Place) -> bytes:
    """What reaches the agent's socket: the shim's framing bent every way, or no framing."""
    kind = draw(st.sampled_from(("framed",) * 5 + ("raw", "magic-only", "no-end", "other-magic")))
    if kind == "raw":
        return draw(st.binary(max_size=200))
    if kind == "magic-only":
        return shim.MAGIC
    if kind == "other-magic":
        return b"numanet-cni 2\n" + draw(st.binary(max_size=50))
    entries = []
    env = draw(environments(place))
    for key, value in env.items():
        entries.append(key + b"=" + value + b"\0")
    for _ in range(draw(st.integers(min_value=0, max_value=2))):  # junk or repeated entries
        key = draw(st.sampled_from([n.encode() for n in ENV_NAMES] + [b"PATH", b"", b"CNI_X"]))
        value = draw(st.binary(max_size=30).map(_no_nul))
        entries.append(key + draw(st.sampled_from([b"=", b""])) + value + b"\0")
    entries = draw(st.permutations(entries))
    body = shim.MAGIC + b"".join(entries)
    if kind == "no-end":
        return body
    return body + b"\0" + draw(configs(place))


# -- the runner -------------------------------------------------------------------------------


class CaseFailed(AssertionError):
    pass


class CniFuzzer:
    """Runs cases against a running CNI bed (``tests/cni/conftest.py``'s ``CniBed``).
    ``strict``: a broken rule raises (hypothesis then shrinks the case); otherwise it is
    counted in ``figures`` and the bed is cleaned for the next case."""

    def __init__(self, bed: Any, place: Place, figures: Figures, *, strict: bool) -> None:
        self.bed = bed
        self.place = place
        self.figures = figures
        self.strict = strict
        self._thread_errors: list[str] = []
        self._log_tracebacks: list[str] = []
        self._probe_counter = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @contextmanager
    def watching(self) -> Iterator[CniFuzzer]:
        """Count uncaught exceptions in threads and tracebacks in the agent's log."""
        fuzzer = self

        class TracebackHandler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.exc_info:
                    fuzzer._log_tracebacks.append(f"{record.name}: {record.getMessage()[:200]}")

        handler = TracebackHandler(logging.ERROR)
        loggers = [logging.getLogger(name) for name in ("cni", "deviceplugin", "vswitch")]
        for logger in loggers:
            logger.addHandler(handler)
        previous_hook = threading.excepthook

        def hook(args: threading.ExceptHookArgs) -> None:
            self._thread_errors.append(f"thread {args.thread.name if args.thread else '?'} died: "
                                       f"{args.exc_type.__name__}: {args.exc_value}")
            previous_hook(args)

        threading.excepthook = hook
        bridges = self._bridges()
        try:
            yield self
        finally:
            threading.excepthook = previous_hook
            for logger in loggers:
                logger.removeHandler(handler)
            for bridge in self._bridges() - bridges:  # made by a case that named a bridge
                self.bed.ovs.vsctl("--if-exists", "del-br", bridge, wait=False)

    def _bridges(self) -> set[str]:
        return set(self.bed.ovs.vsctl("list-br").split())

    # -- cases -------------------------------------------------------------------------------

    def shim_case(self, env: dict[bytes, bytes], stdin: bytes, attached: bool = False) -> None:
        """One exec of the real shim with ``env`` (plus its socket) and ``stdin``.
        ``attached``: the first device holds a live attachment (container ``fz1``, the
        good environment's) during the call, removed by a valid DEL after it."""
        full = {b"PATH": b"/usr/bin:/bin", b"NUMANET_CNI_SOCKET": str(self.place.socket).encode(),
                **env}
        problems = []
        if attached:
            added = self._valid_call("ADD", self.place.devices[0], "fz1")
            if added[0] != 0:
                problems.append(f"a valid ADD before the case failed: {added[1][:300]!r}")
        rc, out, err = self._exec(full, stdin)
        problems += self._answer_problems(rc, out, err)
        if rc == 0 and env.get(b"CNI_COMMAND") == b"ADD":
            undo = self._exec({**full, b"CNI_COMMAND": b"DEL"}, stdin)
            if undo[0] != 0:
                problems.append(f"the DEL of a successful ADD failed: {undo[1][:300]!r}")
        if attached:
            removed = self._valid_call("DEL", self.place.devices[0], "fz1")
            if removed[0] != 0:
                problems.append(f"the valid DEL after the case failed: {removed[1][:300]!r}")
        self._after(problems, f"shim attached={attached} env={env!r} stdin={stdin[:300]!r}", rc)

    def _valid_call(self, command: str, device: str, container: str) -> tuple[int, bytes, bytes]:
        env = {b"PATH": b"/usr/bin:/bin", b"NUMANET_CNI_SOCKET": str(self.place.socket).encode(),
               b"CNI_COMMAND": command.encode(), b"CNI_CONTAINERID": container.encode(),
               b"CNI_IFNAME": b"net1", b"CNI_NETNS": self.place.netns.encode(),
               b"CNI_PATH": b"/usr/lib/cni", b"CNI_ARGS": b"IgnoreUnknown=1;" + _pod_args()}
        return self._exec(env, json.dumps(base_config(self.place, device)).encode())

    def frame_case(self, request: bytes) -> None:
        """One connection to the agent's socket: ``request``, half-close, the answer."""
        rc, out = self._send(request)
        problems = [] if rc is None else self._answer_problems(rc, out, b"")
        if rc is None:
            problems.append(f"no complete answer: {out[:200]!r}")
        if rc == 0:
            try:
                env, stdin = decode_call(request)
            except Exception:  # noqa: BLE001 - the agent did decode it
                env, stdin = {}, b""
            if env.get("CNI_COMMAND") == "ADD":
                del_env = {k.encode(): v.encode("utf-8", "surrogateescape")
                           for k, v in env.items()}
                undo, text = self._send(shim.encode_call({**del_env, b"CNI_COMMAND": b"DEL"},
                                                         stdin))
                if undo != 0:
                    problems.append(f"the DEL of a successful ADD failed: {text[:300]!r}")
        self._after(problems, f"frame {request[:300]!r}", rc)

    def _exec(self, env: dict[bytes, bytes], stdin: bytes) -> tuple[int, bytes, bytes]:
        done = subprocess.run([str(SHIM)], input=stdin, env=env, capture_output=True,
                              timeout=120, check=False)
        return done.returncode, done.stdout, done.stderr

    def _send(self, request: bytes) -> tuple[int | None, bytes]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(60)
            sock.connect(str(self.place.socket))
            try:
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # answered early (too large): the answer is there to read
            reply = b""
            try:
                while chunk := sock.recv(65536):
                    reply += chunk
            except ConnectionResetError:
                pass  # answered and closed with the request unread: the answer is whole
        head, sep, body = reply.partition(b"\n")
        if not sep or head not in (b"0", b"1"):
            return None, reply
        return int(head), body

    @staticmethod
    def _answer_problems(rc: int, out: bytes, err: bytes) -> list[str]:
        if b"Traceback" in out + err:
            return [f"traceback: {(out + err)[-400:]!r}"]
        if rc == 0:
            if out.strip():
                try:
                    json.loads(out)
                except ValueError:
                    return [f"exit 0 with output that is not JSON: {out[:200]!r}"]
            return []
        if rc != 1:
            return [f"exit code {rc}: {out[:200]!r} {err[-200:]!r}"]
        try:
            doc = json.loads(out)
        except ValueError:
            return [f"error that is not JSON: {out[:200]!r} {err[-200:]!r}"]
        if not isinstance(doc, dict) or doc.get("code") not in ANSWER_CODES \
                or not isinstance(doc.get("msg"), str) or not doc.get("cniVersion"):
            return [f"not a CNI error with a documented code: {out[:300]!r}"]
        return []

    # -- after each case ---------------------------------------------------------------------

    def _after(self, problems: list[str], case: str, rc: int | None) -> None:
        self.figures.cases += 1
        if rc == 0:
            self.figures.succeeded += 1
        tracebacks = self._thread_errors + self._log_tracebacks
        self._thread_errors, self._log_tracebacks = [], []
        self.figures.tracebacks += len(tracebacks) + sum("traceback" in p for p in problems)
        problems = problems + tracebacks
        if not self._agent_answers():
            problems.append("the agent no longer answers on its socket")
        problems += self._outside_files()
        left = self._leftovers()
        if left:
            problems.append(f"left behind: {left}")
            for device in self._devices_with_state():
                if not self._device_works(device):
                    self.figures.wedged.add(device)
                    problems.append(f"device {device} is wedged: a valid ADD fails")
            self._clean()
        if problems:
            self.figures.failures += 1
            text = f"{'; '.join(problems)} <- {case}"
            if len(self.figures.examples) < MAX_LISTED:
                self.figures.examples.append(text)
            if self.strict:
                raise CaseFailed(text)

    def _agent_answers(self) -> bool:
        try:
            rc, out = self._send(shim.encode_call({b"CNI_COMMAND": b"VERSION"},
                                                  b'{"cniVersion":"1.1.0"}'))
        except OSError:
            return False
        return rc == 0 and b"supportedVersions" in out

    def _outside_files(self) -> list[str]:
        """Files in the trap or the agent's working directory (reported, then removed)."""
        place = self.place
        keep = {place.workdir, *place.workdir.parents}
        found = list(place.trap.rglob("*")) + [p for p in place.cwd.rglob("*") if p not in keep]
        for path in sorted(found, key=lambda p: len(p.parts), reverse=True):
            try:
                path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
            except OSError:
                pass
        return [f"files outside the agent's directories: {sorted(map(str, found))[:5]}"] \
            if found else []

    def _leftovers(self) -> list[str]:
        bed = self.bed
        left = [f"record {p.name}" for p in bed.records()]
        left += [f"port {p.device_id}" for p in bed.switch.ports()
                 if p.device_id in self.place.devices]
        left += [f"lease {p}" for p in self._lease_files()]
        left += [f"container file {p}" for p in bed.container_files()]
        left += [f"device-info file {p}" for p in self.place.devinfo_dir.parent.rglob("*")
                 if p.is_file()]
        return left

    def _lease_files(self) -> list[Path]:
        if not self.place.ipam_dir.is_dir():
            return []
        return [p for p in self.place.ipam_dir.rglob("*") if p.is_file()
                and p.name != "lock" and not p.name.startswith("last_reserved_ip")]

    def _devices_with_state(self) -> set[str]:
        held = {p.stem for p in self.bed.records()}
        held |= {p.device_id for p in self.bed.switch.ports()
                 if p.device_id in self.place.devices}
        return held & set(self.place.devices)

    def _device_works(self, device: str) -> bool:
        """A valid ADD and DEL of ``device`` for a new container, as the next pod's."""
        self._probe_counter += 1
        container = f"probe{self._probe_counter}"
        added = self._valid_call("ADD", device, container)[0] == 0
        self._valid_call("DEL", device, container)
        return added

    def _clean(self) -> None:
        """Remove whatever a case left, so that the next case starts clean."""
        bed = self.bed
        for port in bed.switch.ports():
            if port.device_id in self.place.devices:
                bed.switch.unplug(port.device_id)
        for path in bed.records() + bed.container_files() + self._lease_files():
            path.unlink(missing_ok=True)
        for path in self.place.devinfo_dir.parent.rglob("*"):
            if path.is_file():
                path.unlink()

    # -- the end of a run --------------------------------------------------------------------

    def finish(self) -> None:
        """Every device still takes a valid ADD and DEL; the agent still answers."""
        for device in self.place.devices:
            if not self._device_works(device):
                self.figures.wedged.add(device)
        problems = [f"device {d} is wedged: a valid ADD fails" for d in sorted(self.figures.wedged)]
        if not self._agent_answers():
            problems.append("the agent no longer answers on its socket")
        problems += self._outside_files()
        if self._leftovers():
            problems.append(f"left behind at the end: {self._leftovers()}")
        if problems and self.strict:
            raise CaseFailed("; ".join(problems))
        self.figures.failures += len(problems)
        self.figures.examples += problems


def seconds_budget() -> float | None:
    """``NUMANET_FUZZ_SECONDS``: run random cases this long (``make fuzz``); None: the
    bounded, derandomized run of ``make test``."""
    value = os.environ.get("NUMANET_FUZZ_SECONDS")
    return float(value) if value else None


class Clock:
    def __init__(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + seconds

    def left(self) -> bool:
        return time.monotonic() < self.deadline

    def elapsed(self) -> float:
        return time.monotonic() - self.started
