"""A private Unix socket file: bound owner-only, a stale one replaced, a live one left alone,
and the credentials of each peer. (After qtile's ``libqtile/ipc.py``.)"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import stat
import struct
from pathlib import Path

from aimterm.errors import AlreadyRunning, ConfigError

__all__ = ["bind_private", "clear_stale", "peer_cred"]

log = logging.getLogger(__name__)

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_cred(writer: asyncio.StreamWriter) -> tuple[int, int, int]:
    sock = writer.get_extra_info("socket")
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return int(pid), int(uid), int(gid)


def clear_stale(path: Path) -> None:
    """Remove a socket file nobody listens on; raise :class:`AlreadyRunning` for a live one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError("exists and is not a socket; move it away", path=str(path))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        log.info("removing the stale socket %s (nobody listens on it)", path)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    except FileNotFoundError:
        return
    except TimeoutError:
        # Its backlog is full: very much alive.
        raise AlreadyRunning(str(path)) from None
    finally:
        probe.close()
    raise AlreadyRunning(str(path))


def bind_private(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # bind() creates the file with 0777 & ~umask: narrow the umask so the socket is never
        # reachable by others, even for the moment before the chmod. (The umask is
        # process-wide; the window is a single syscall.)
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            # Another server bound the path between our stale check and our bind.
            raise AlreadyRunning(str(path)) from None
        raise
    return sock
