"""The socket files VPP creates in slot directories: keep them private, remove what it leaves.

When VPP is the listening side (memif master, vhost-user server) it creates the unix
socket at the slot's path. VPP closes a memif listener without unlinking its file, and a
crashed VPP leaves every file behind, so unplug removes the file itself. Only sockets
are ever removed: a regular file or directory at that path is not VPP's and is left alone.
"""

from __future__ import annotations

import logging
import os
import stat

from vswitch.sockfiles import NotASocket, remove_socket_file

log = logging.getLogger(__name__)


def remove_leftover_socket(path: str, device_id: str) -> bool:
    """Unlink ``path`` if it is a unix socket; True when something was removed."""
    try:
        removed = remove_socket_file(path, refuse_other=True)
    except NotASocket:
        log.warning("not removing a file that is not a socket device_id=%s path=%s",
                    device_id, path)
        return False
    except OSError as exc:
        log.warning("cannot remove socket file device_id=%s path=%s: %s", device_id, path, exc)
        return False
    if removed:
        log.info("removed socket file VPP left behind device_id=%s path=%s", device_id, path)
    return removed


def restrict_socket(path: str, device_id: str) -> None:
    """Clear the world bits of a socket VPP created: only its owner and group may connect."""
    try:
        st = os.lstat(path)
    except OSError:
        # VPP may live in another mount namespace; nothing to check from here.
        return
    if not stat.S_ISSOCK(st.st_mode) or not st.st_mode & 0o007:
        return
    try:
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o007)
    except OSError as exc:
        log.warning("cannot restrict socket device_id=%s path=%s: %s", device_id, path, exc)
