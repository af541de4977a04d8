"""Socket files: whoever removes one removes only a socket.

A unix socket file outlives the process that bound it: a slot's ``sock`` (created by the
container, OVS's DPDK or VPP), a plugin's socket in the kubelet's directory. The next
listener on that path fails with "Address already in use" until it is removed. A regular
file or directory at that path is not ours to delete.
"""

from __future__ import annotations

import errno
import os
import stat


class NotASocket(OSError):
    """Something other than a socket stands where a socket was to be removed."""


def remove_socket_file(path: str | os.PathLike[str], refuse_other: bool = False) -> bool:
    """Unlink ``path`` if it is a unix socket; True when something was removed.

    A missing path is fine. Anything else at the path is left alone, and with
    ``refuse_other`` raises NotASocket (for callers that must bind there next). Other
    OSErrors (permissions, I/O) reach the caller.
    """
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            if refuse_other:
                raise NotASocket(errno.EEXIST, f"{os.fspath(path)} exists and is not a socket",
                                 os.fspath(path))
            return False
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
