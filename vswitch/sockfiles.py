"""Socket files in slot directories: whoever removes one removes only a socket.

A slot's ``sock`` is created by whichever side listens (the container, OVS's DPDK, VPP)
and outlives its process; the next listener on that slot would fail with "Address
already in use". A regular file or directory at that path is not ours to delete.
"""

from __future__ import annotations

import os
import stat


def remove_socket_file(path: str | os.PathLike[str]) -> bool:
    """Unlink ``path`` if it is a unix socket; True when something was removed.

    A missing path is fine; other OSErrors (permissions, I/O) reach the caller.
    """
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
