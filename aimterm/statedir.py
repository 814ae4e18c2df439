"""Private dirs and files: the state dir and what aimterm writes in it.

The state dir holds prompts, replies and terminal transcripts, so nobody else may read it or
put anything in it. The rules, checked before anything is written:

- a dir aimterm makes is made 0700 (exactly: not through the umask), its missing parents too;
- a dir that already exists must be a real directory (not a symlink), owned by us, with no
  group/other bits. It is refused, never chmod-ed: one we did not make may have been planted;
- a file is opened with ``O_NOFOLLOW`` (a symlink is refused, never followed) and
  ``O_CLOEXEC``; a new one is made 0600, an existing one must be a regular file, owned by us,
  with no group/other bits. The check is on the open file (fstat), so it is the file we use.

Each refusal is an :class:`~aimterm.errors.UnsafeRuntimeDir` (exit 24): one line naming the
path, the problem and the fix.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO, Any

from aimterm.errors import UnsafeRuntimeDir

__all__ = ["check_private_file", "ensure_private_dir", "open_private",
           "open_private_file", "private_dirs", "refusal"]

DIR_FIX = "chmod 700 it if you made it, or choose another --state-dir"
FILE_FIX = "chmod 600 it if you made it, or remove it"


def refusal(path: str | os.PathLike[str], mode: int, reason: str, fix: str) -> UnsafeRuntimeDir:
    """The error that refuses ``path``: ``refusing to use PATH: REASON; FIX``."""
    return UnsafeRuntimeDir(os.fspath(path), mode, reason, fix)


def our_uid() -> int:
    """The uid a private entry must belong to: the one our new files get (a test seam)."""
    return os.geteuid()


def _refuse_stat(path: str | os.PathLike[str], st: os.stat_result, *, directory: bool) -> None:
    """Raise the refusal of ``path`` unless ``st`` is a private dir (or file) of ours."""
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        fix = ("use the real directory or choose another --state-dir" if directory
               else "remove it (aimterm never makes one)")
        raise refusal(path, mode, f"it is a symbolic link{_readlink(path)}", fix)
    if directory and not stat.S_ISDIR(st.st_mode):
        raise refusal(path, mode, "not a directory", "move it away or choose another --state-dir")
    if not directory and not stat.S_ISREG(st.st_mode):
        raise refusal(path, mode, "not a regular file", "move it away")
    uid = our_uid()
    if st.st_uid != uid:
        raise refusal(path, mode, f"owned by uid {st.st_uid}, not by you (uid {uid})",
                      "choose another --state-dir" if directory else "move it away")
    if mode & 0o077:
        raise refusal(path, mode, f"mode {mode:04o} lets group or other users in",
                      DIR_FIX if directory else FILE_FIX)


def _readlink(path: str | os.PathLike[str]) -> str:
    try:
        return f" (to {os.readlink(path)})"
    except OSError:
        return ""


def private_dirs(path: str | os.PathLike[str]) -> Path:
    """Make ``path`` and its missing parents, each 0700; an existing one is left as it is
    (its owner chose it). Returns ``path`` made absolute."""
    target = Path(os.path.abspath(path))
    missing: list[Path] = []
    here = target
    # lexists: a dangling symlink is there (and refused later), not something to make.
    while not os.path.lexists(here) and here != here.parent:
        missing.append(here)
        here = here.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue  # made meanwhile by someone else: the check of the target decides
        _exact_mode(folder)
    return target


def _exact_mode(folder: Path) -> None:
    """Set a dir we just made to 0700: mkdir's mode went through the umask."""
    try:
        # On the dir itself (not a link swapped in for it since): open it, chmod the fd.
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except PermissionError:
        # A umask that took our own read bit: no fd to be had, so check, then chmod the path.
        st = os.lstat(folder)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == our_uid():
            os.chmod(folder, 0o700)
        return
    try:
        if os.fstat(fd).st_uid == our_uid():
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def ensure_private_dir(path: str | os.PathLike[str]) -> Path:
    """Make ``path`` (and its missing parents) 0700, or check that the existing ``path`` is a
    real dir of ours that nobody else may enter. Raises
    :class:`~aimterm.errors.UnsafeRuntimeDir`."""
    target = private_dirs(path)
    _refuse_stat(target, os.lstat(target), directory=True)
    return target


def check_private_file(path: str | os.PathLike[str]) -> None:
    """Refuse an existing ``path`` that is not a private regular file of ours (a symlink is
    refused, not followed); nothing there is fine. Opens nothing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    _refuse_stat(path, st, directory=False)


def open_private(path: str | os.PathLike[str], flags: int, *, create: bool = True) -> int:
    """Open ``path`` for ``flags`` (``os.O_WRONLY | os.O_APPEND``, ...) without following a
    symlink: a new file is made 0600, an existing one must be a private regular file of
    ours. ``O_TRUNC`` empties the file only after that check. Returns the fd (``O_CLOEXEC``).
    Raises :class:`~aimterm.errors.UnsafeRuntimeDir`, or OSError (``FileNotFoundError``
    when not ``create``)."""
    truncate = bool(flags & os.O_TRUNC)
    # O_NONBLOCK: a planted FIFO would block the open; it is refused instead.
    base = (flags & ~(os.O_TRUNC | os.O_CREAT | os.O_EXCL)) | os.O_NOFOLLOW | os.O_CLOEXEC \
        | os.O_NONBLOCK
    fd = -1
    if create:
        try:
            fd = os.open(path, base | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            try:
                os.fchmod(fd, 0o600)  # the umask may have taken bits off
            except BaseException:
                os.close(fd)
                raise
    if fd < 0:
        try:
            fd = os.open(path, base)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENXIO, errno.EISDIR):
                check_private_file(path)  # a symlink, a FIFO, a dir: say which
            raise
    try:
        _refuse_stat(path, os.fstat(fd), directory=False)
        os.set_blocking(fd, True)
        if truncate:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private_file(path: str | os.PathLike[str], flags: int, mode: str,
                      **kwargs: Any) -> IO[Any]:
    """:func:`open_private` as a file object (``mode`` and ``kwargs`` as for ``open``)."""
    fd = open_private(path, flags)
    try:
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise
