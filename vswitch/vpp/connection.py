"""The one place numanet talks to VPP: a vpp_papi client over VPP's API socket.

Every request goes through ``VppConnection.call`` (or ``dump`` for the *_dump streams),
which turns each way a call can fail into our errors:

- a reply with a non-zero ``retval`` -> ``VppCallError`` naming the call, the slot and
  VPP's answer (``VNET_API_ERROR_...``);
- the socket gone, a read timeout, a broken stream -> the client is dropped, the
  ``on_lost`` hook fires and ``VSwitchUnavailable`` is raised (the caller retries after
  the reconnect);
- a message VPP does not offer (plugin not loaded, API version numanet does not know)
  or arguments the API definition refuses -> ``VSwitchError``.

vpp_papi's client is not safe for concurrent calls (replies are matched on one read
queue), so calls are serialised with a lock. vpp_papi never exits the process on its
own; nothing here does either.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

from vpp_papi import VPPApiClient

from vswitch.api import VSwitchError, VSwitchUnavailable
from vswitch.vpp.errors import VppCallError

log = logging.getLogger(__name__)

DEFAULT_CLIENT_NAME = "numanet"


class VppConnection:
    """A long-lived vpp_papi client; ``open`` again after it is lost (a fresh client each time)."""

    def __init__(
        self,
        api_socket: str,
        api_dir: str | None = None,
        *,
        client_name: str = DEFAULT_CLIENT_NAME,
        read_timeout: float = 5.0,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.api_socket = api_socket
        self.api_dir = api_dir
        self._client_name = client_name
        self._read_timeout = read_timeout
        self._on_lost = on_lost
        self._lock = threading.RLock()
        self._client: Any = None
        self.last_error = "not connected yet"
        self.version = ""

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Connect (dropping any previous client); raises VSwitchUnavailable or VSwitchError."""
        with self._lock:
            self._drop(graceful=True)
            client = self._new_client()
            try:
                client.connect(self._client_name)
            except OSError as exc:
                _dispose(client)
                self.last_error = f"cannot reach the VPP API socket {self.api_socket}: {exc}"
                raise VSwitchUnavailable(self.last_error) from exc
            except (AttributeError, KeyError) as exc:
                # The bootstrap message (get_api_json) or a memclnt message is missing.
                _dispose(client)
                self.last_error = self._definitions_hint(exc)
                raise VSwitchError(self.last_error) from exc
            except Exception as exc:  # noqa: BLE001 - vpp_papi raises many types mid-handshake
                _dispose(client)
                self.last_error = (
                    f"VPP at {self.api_socket} broke off the API handshake: "
                    f"{type(exc).__name__}: {exc}"
                )
                raise VSwitchUnavailable(self.last_error) from exc
            self._client = client
            try:
                reply = self.call("show_version")
            except VSwitchError:
                self._drop(graceful=False)
                raise
            self.version = str(reply.version)
            self.last_error = ""
            log.info("connected to VPP %s at %s", self.version, self.api_socket)

    def close(self) -> None:
        with self._lock:
            self._drop(graceful=True)
            self.last_error = "closed"

    def alive(self) -> bool:
        """True while the socket is open; False as soon as VPP closed it (e.g. it restarted)."""
        with self._lock:
            client = self._client
            if client is None:
                return False
            transport = client.transport
            thread = getattr(transport, "message_thread", None)
            if transport.connected and thread is not None and thread.is_alive():
                return True
        self._lose("VPP closed the API socket (stopped or restarted)")
        return False

    # -- calls -----------------------------------------------------------------------------

    def offers(self, name: str) -> bool:
        """Whether the connected VPP has this message (its plugin is loaded, CRC matches)."""
        with self._lock:
            client = self._client
            return client is not None and getattr(client.api, name, None) is not None

    def call(
        self, name: str, slot: str | None = None, *, timeout: float | None = None, **args: Any
    ) -> Any:
        """Send one request; return its reply after checking ``retval``."""
        reply = self._send(name, slot, timeout, args)
        retval = getattr(reply, "retval", 0)
        if retval != 0:
            raise VppCallError(name, slot, int(retval))
        return reply

    def dump(self, name: str, slot: str | None = None, **args: Any) -> list[Any]:
        """Send a *_dump request; return the *_details messages."""
        reply = self._send(name, slot, None, args)
        if not isinstance(reply, list):
            raise VSwitchError(f"VPP answered {name} with {type(reply).__name__}, not a list")
        return reply

    def _send(
        self, name: str, slot: str | None, timeout: float | None, args: dict[str, Any]
    ) -> Any:
        where = f"slot {slot}" if slot else "no slot"
        with self._lock:
            client = self._client
            if client is None:
                raise VSwitchUnavailable(
                    f"{name} ({where}): not connected to VPP at {self.api_socket} "
                    f"({self.last_error}); retry after the reconnect"
                )
            func = getattr(client.api, name, None)
            if func is None:
                raise VSwitchError(
                    f"VPP {self.version} at {self.api_socket} does not offer {name} ({where}): "
                    "load the plugin that provides it (memif_plugin.so for memif) or run a VPP "
                    "whose API has this message and CRC (numanet targets VPP 24.02 and later)"
                )
            if timeout is not None:
                args = {**args, "_timeout": timeout}
            try:
                return func(**args)
            except OSError as exc:
                reason = f"{name} ({where}) lost the VPP connection: {exc}"
                self._lose(reason)
                raise VSwitchUnavailable(reason + "; retry after the reconnect") from exc
            except (ValueError, TypeError, struct.error) as exc:
                raise VSwitchError(
                    f"VPP API definition of {name} refuses the arguments for {where}: {exc}"
                ) from exc
            except Exception as exc:  # noqa: BLE001 - anything else leaves the stream unknown
                reason = f"{name} ({where}) failed inside vpp_papi: {type(exc).__name__}: {exc}"
                self._lose(reason)
                raise VSwitchUnavailable(reason + "; retry after the reconnect") from exc

    # -- internals -------------------------------------------------------------------------

    def _new_client(self) -> Any:
        kwargs: dict[str, Any] = {
            "server_address": self.api_socket,
            "read_timeout": self._read_timeout,
            "async_thread": False,  # numanet subscribes to no events
            "logger": logging.getLogger("vpp_papi.numanet"),
        }
        try:
            if self.api_dir is not None:
                return VPPApiClient(apidir=self.api_dir, **kwargs)
            # VPP hands out its own API definitions at connect (get_api_json).
            return VPPApiClient(bootstrapapi=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - vpp_papi signals bad dirs with several types
            self.last_error = (
                f"no usable VPP API definitions (*.api.json) under {self.api_dir}: {exc}; "
                "point api_dir at VPP's share/vpp/api directory or leave it unset to load "
                "the definitions from VPP at connect"
            )
            raise VSwitchError(self.last_error) from exc

    def _definitions_hint(self, exc: BaseException) -> str:
        if self.api_dir is None:
            return (
                f"VPP at {self.api_socket} did not hand out its API definitions ({exc!r}); "
                "VPP older than 23.10 has no get_api_json: set api_dir to its share/vpp/api"
            )
        return (
            f"the API definitions under {self.api_dir} lack a message the connection needs "
            f"({exc!r}); memclnt.api.json must be there too"
        )

    def _lose(self, reason: str) -> None:
        with self._lock:
            if self._client is None:
                return
            self._drop(graceful=False)
            self.last_error = reason
        log.warning("VPP connection lost: %s", reason)
        if self._on_lost is not None:
            self._on_lost(reason)

    def _drop(self, *, graceful: bool) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if graceful:
            try:
                client.disconnect()
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                log.debug("VPP disconnect: %s", exc)
        _dispose(client)


def _dispose(client: Any) -> None:
    """Stop a vpp_papi client's reader thread and close its socket without talking to VPP.

    vpp_papi's own disconnect() first asks VPP to delete the registration and waits a
    read timeout for the answer, which is pointless when VPP is gone or hung.
    """
    transport = client.transport
    transport.connected = False
    sock = getattr(transport, "socket", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes the reader's poll()
        except OSError:
            pass
    try:
        transport.sque.put(True)  # the reader's documented stop signal
    except (OSError, ValueError):
        pass
    thread = getattr(transport, "message_thread", None)
    if thread is not None and thread.is_alive():
        thread.join(timeout=2.0)
    transport.message_thread = None
    if sock is not None:
        sock.close()
    transport.socket = None
    for queue_name in ("q", "sque"):
        queue = getattr(transport, queue_name, None)
        if queue is None:
            continue
        try:
            queue.close()
            queue.join_thread()
        except (OSError, ValueError, AssertionError):
            pass
