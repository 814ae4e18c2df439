"""One child process under a pseudo-terminal: honest spawn, non-blocking I/O, exit, and stop.

Spawn is honest (ptyprocess reports the real exec error before :meth:`PtyChild.spawn`
returns) and checks up front what a person would get wrong: a missing command, a file that is
not executable, a working directory that does not exist. The child becomes a session and
process-group leader, so stopping it signals the whole group and no grandchild survives.

Output and exit are delivered on the shared :class:`~aimterm.term.loop.IOLoop`: the master fd
and a pidfd of the child are registered there, and ``on_data(bytes)`` / ``on_exit(code,
signal)`` are called on the loop thread.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import psutil
import ptyprocess

from aimterm.errors import SpawnError, StopTimeout
from aimterm.term.loop import IOLoop

OnData = Callable[[bytes], None]
OnExit = Callable[[int | None, int | None], None]

_READ_SIZE = 65536
#: Bytes that may wait for a tool that is not reading its terminal; past that, writes fail.
_OUTBOX_MAX = 1 << 20
#: How long stragglers in the child's session get after the leader exits before SIGKILL.
_STRAGGLER_GRACE_S = 0.5


def resolve_command(argv: Sequence[str], env: Mapping[str, str], cwd: str | None) -> str:
    """Find ``argv[0]`` the way exec would, or raise a SpawnError that says what is wrong."""
    if not argv:
        raise SpawnError(argv, "the command is empty")
    cmd = argv[0]
    if cwd is not None and not os.path.isdir(cwd):
        raise SpawnError(argv, f"working directory {cwd!r} does not exist")
    if os.sep in cmd:
        path = cmd if os.path.isabs(cmd) or cwd is None else os.path.join(cwd, cmd)
        if not os.path.exists(path):
            raise SpawnError(argv, f"no such file {path!r}")
        if os.path.isdir(path):
            raise SpawnError(argv, f"{path!r} is a directory")
        if not os.access(path, os.X_OK):
            raise SpawnError(argv, f"{path!r} is not executable (chmod +x?)")
        return path
    found = shutil.which(cmd, path=env.get("PATH", os.defpath))
    if found is None:
        raise SpawnError(argv, f"command {cmd!r} not found on PATH")
    return found


def _exec_failure(path: str, exc: OSError) -> str:
    """Why exec failed, in words: ENOENT on a file that exists means its interpreter is missing."""
    if exc.errno == errno.ENOENT and os.path.exists(path):
        try:
            with open(path, "rb") as fh:
                first = fh.readline(256)
        except OSError:
            first = b""
        if first.startswith(b"#!"):
            interp = first[2:].strip().split(b" ")[0].decode("utf-8", "replace")
            return f"its interpreter {interp!r} (from the #! line) was not found"
    return exc.strerror or str(exc)


#: Signals a tool starts with at their defaults, as under a terminal emulator or tmux,
#: whatever this process had: Python ignores SIGPIPE, and a parent run under ``nohup``
#: ignores SIGHUP, and an ignored signal survives exec (the tool would then never die of
#: the hang-up that stop() sends).
_RESET_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
                  signal.SIGPIPE, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU,
                  signal.SIGXFSZ)


def _default_signals() -> None:
    """In the child, between fork and exec."""
    for sig in _RESET_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


class _PtyProcess(ptyprocess.PtyProcess):  # type: ignore[misc]
    """ptyprocess's child with its fd in a bare file. ptyprocess wraps it in a
    ``BufferedRWPair``: two 8 KiB buffers per child that are never used here (the loop reads
    and writes the fd itself), 1.6 MB over a hundred instances. Otherwise its own ``__init__``
    (the attributes are checked against it in the tests)."""

    def __init__(self, pid: int, fd: int) -> None:
        ptyprocess.ptyprocess._make_eof_intr()
        self.pid = pid
        self.fd = fd
        self.fileobj = open(fd, "r+b", buffering=0)  # (closing it closes the fd)
        self.terminated = False
        self.closed = False
        self.exitstatus = None
        self.signalstatus = None
        self.status = None
        self.flag_eof = False
        self.delayafterclose = 0.1
        self.delayafterterminate = 0.1


class PtyChild:
    """A live child under a PTY. Create with :meth:`spawn`."""

    def __init__(self, proc: ptyprocess.PtyProcess, argv: Sequence[str], loop: IOLoop,
                 on_data: OnData, on_exit: OnExit) -> None:
        # We own the fd and the reaping: keep ptyprocess's finaliser from racing us, and keep
        # only its file (the process object is a kilobyte an instance that nothing reads).
        proc.closed = True
        self._file = proc.fileobj
        self.pid: int = proc.pid
        self.fd: int = proc.fd
        self.argv = list(argv)
        self._loop = loop
        self._on_data = on_data
        self._on_exit = on_exit
        self._exited = threading.Event()
        self._group_clear = threading.Event()  # set once stragglers in the session are gone
        self._stopping = False
        self.returncode: int | None = None
        self.signal: int | None = None
        self._pidfd: int | None = None
        self._reading = False
        # What the PTY could not take yet, sent as the tool reads (loop thread only): a write
        # never waits on a tool, so one that stops reading cannot stall the shared loop.
        self._outbox = bytearray()
        self._stalled_since: float | None = None  # when the outbox last made no progress
        self.started_at = time.monotonic()

    # -- life cycle ---------------------------------------------------------------------------

    @classmethod
    def spawn(cls, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None = None,
              rows: int = 40, cols: int = 120, on_data: OnData, on_exit: OnExit,
              loop: IOLoop | None = None) -> PtyChild:
        resolved = resolve_command(argv, env, cwd)
        full = [resolved, *argv[1:]]
        try:
            proc = _PtyProcess.spawn(full, cwd=cwd, env=dict(env),
                                               dimensions=(rows, cols),
                                               preexec_fn=_default_signals)
        except OSError as exc:
            raise SpawnError(argv, _exec_failure(resolved, exc)) from None
        except Exception as exc:  # ptyprocess raises plain Exception on garbled exec errors
            raise SpawnError(argv, str(exc)) from None
        child = cls(proc, argv, loop or IOLoop.shared(), on_data, on_exit)
        child._start()
        return child

    def _start(self) -> None:
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # kernels before 5.3: poll instead
            self._pidfd = None
        self._loop.run_sync(self._register)

    def _register(self) -> None:
        self._loop.loop.add_reader(self.fd, self._readable)
        self._reading = True
        if self._pidfd is not None:
            self._loop.loop.add_reader(self._pidfd, self._child_exited)
        else:
            self._poll_exit()

    def _poll_exit(self) -> None:
        if self._exited.is_set():
            return
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            info = None
        if info is not None:
            self._child_exited()
        else:
            self._loop.call_later(0.05, self._poll_exit)

    # -- loop-thread callbacks ----------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EBADF):  # every slave fd closed
                self._stop_reading()
                return
            raise
        if not data:
            self._stop_reading()
            return
        self._on_data(data)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            try:
                self._loop.loop.remove_reader(self.fd)
            except (ValueError, OSError):
                pass

    def _drain(self) -> None:
        while self._reading:
            try:
                data = os.read(self.fd, _READ_SIZE)
            except OSError:
                break
            if not data:
                break
            self._on_data(data)

    def _child_exited(self) -> None:
        if self._exited.is_set():
            return
        if self._pidfd is not None:
            self._loop.loop.remove_reader(self._pidfd)
        # Whatever the child wrote last is still in the PTY buffer: deliver it first.
        self._drain()
        # The zombie is not reaped yet, so its pid (= our process group and session id)
        # cannot be reused while we collect what it left behind.
        stragglers = self._session_members()
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = 0
        if os.WIFSIGNALED(status):
            self.signal = os.WTERMSIG(status)
        else:
            self.returncode = os.WEXITSTATUS(status)
        self._stop_reading()
        self._close_fds()
        self._exited.set()
        if stragglers:
            self._reap_stragglers(stragglers)
        else:
            self._group_clear.set()
        self._on_exit(self.returncode, self.signal)

    def _session_members(self) -> list[psutil.Process]:
        """Processes still in the child's session or process group (not the child)."""
        members = []
        for pid in psutil.pids():
            if pid == self.pid:
                continue
            try:
                if os.getsid(pid) == self.pid or os.getpgid(pid) == self.pid:
                    members.append(psutil.Process(pid))
            except (OSError, psutil.Error):
                continue
        return members

    def _reap_stragglers(self, procs: list[psutil.Process]) -> None:
        if self._stopping:  # they already had their signals with the leader
            for proc in procs:
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            self._group_clear.set()
            return
        for proc in procs:
            try:
                proc.send_signal(signal.SIGHUP)
                proc.send_signal(signal.SIGCONT)
            except psutil.Error:
                pass

        def _kill() -> None:
            for proc in procs:
                try:
                    proc.kill()  # psutil checks the process identity: safe against pid reuse
                except psutil.Error:
                    pass
            self._group_clear.set()

        self._loop.call_later(_STRAGGLER_GRACE_S, _kill)

    def _send(self, data: bytes, timeout: float) -> None:
        if self._exited.is_set():
            raise BrokenPipeError(f"process {self.pid} has exited")
        if self._outbox:
            assert self._stalled_since is not None
            if time.monotonic() - self._stalled_since > timeout:
                raise TimeoutError(f"the child stopped reading its terminal "
                                   f"({len(self._outbox)} bytes waiting)")
            if len(self._outbox) + len(data) > _OUTBOX_MAX:
                raise TimeoutError(f"the child stopped reading its terminal "
                                   f"(more than {_OUTBOX_MAX} bytes waiting)")
            self._outbox += data  # (after what waits: order is kept)
            return
        n = self._write_some(data)
        if n < len(data):
            if len(data) - n > _OUTBOX_MAX:
                raise TimeoutError(f"the child stopped reading its terminal "
                                   f"({len(data) - n} bytes would wait)")
            self._outbox += data[n:]
            self._stalled_since = time.monotonic()
            self._loop.loop.add_writer(self.fd, self._writable)

    def _write_some(self, data: bytes | bytearray) -> int:
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EBADF):
                raise BrokenPipeError(f"process {self.pid} has exited") from None
            raise

    def _writable(self) -> None:
        try:
            n = self._write_some(self._outbox)
        except OSError:
            n = len(self._outbox)  # it is gone: nobody will read the rest
        if n:
            del self._outbox[:n]
            self._stalled_since = time.monotonic()
        if not self._outbox:
            self._stop_writing()

    def _stop_writing(self) -> None:
        self._outbox.clear()
        self._stalled_since = None
        try:
            self._loop.loop.remove_writer(self.fd)
        except (ValueError, OSError):
            pass

    def _close_fds(self) -> None:
        self._stop_writing()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        try:
            self._file.close()
        except OSError:
            pass

    # -- caller API (any thread) --------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return not self._exited.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the child has exited and been reaped; True if it has."""
        return self._exited.wait(timeout)

    def wait_group(self, timeout: float | None = None) -> bool:
        """Wait until the child and everything left in its session are gone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._exited.wait(timeout):
            return False
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self._group_clear.wait(left)

    def write(self, data: bytes, timeout: float = 10.0) -> None:
        """Send ``data`` to the tool without ever waiting on it: what the PTY takes goes now,
        the rest (in order) as the tool reads. Raises BrokenPipeError once the child has
        exited, and TimeoutError when earlier bytes have waited ``timeout`` seconds with no
        progress or more than a MiB would wait — the tool stopped reading its terminal."""
        if not self.alive:
            raise BrokenPipeError(f"process {self.pid} has exited")
        # Every write goes through the loop thread, so writes from several threads (the
        # session, a person attached, stop()) keep one order.
        self._loop.run_sync(self._send, data, timeout)

    @property
    def write_backlog(self) -> int:
        """Bytes written but not yet taken by the tool's terminal."""
        return len(self._outbox)

    def resize(self, rows: int, cols: int) -> None:
        """Set the window size; the kernel sends SIGWINCH to the foreground group."""
        if self.alive:
            try:
                fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            except (OSError, termios.error):
                pass

    def signal_group(self, sig: int) -> None:
        if not self.alive:
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(self.pid, sig)

    def stop(self, *, exit_keys: bytes | Sequence[bytes | tuple[bytes, float]] = (),
             exit_timeout: float = 5.0, grace: float = 1.0, key_gap: float = 0.025) -> str:
        """Stop with escalation: exit keys, then SIGHUP, SIGTERM, SIGKILL to the whole group.

        ``exit_keys`` are separate writes, ``key_gap`` apart; an item ``(data, pause)`` waits
        ``pause`` seconds before its write instead.

        Returns how it ended: ``"exited"`` (already gone), ``"keys"``, ``"sighup"``,
        ``"sigterm"`` or ``"sigkill"``. Raises StopTimeout if even SIGKILL did not work.
        """
        if self._loop.in_loop():
            raise RuntimeError("PtyChild.stop() would block the reader loop")
        if not self.alive:
            self.wait_group(grace + 1.0)
            return "exited"
        items = [exit_keys] if isinstance(exit_keys, bytes) else list(exit_keys)
        writes = [(item, key_gap if i else 0.0) if isinstance(item, bytes) else item
                  for i, item in enumerate(items)]
        if any(data for data, _ in writes) and exit_timeout > 0:
            try:
                for chunk, pause in writes:
                    if pause > 0:
                        time.sleep(pause)
                    if chunk:
                        self.write(chunk, timeout=1.0)
            except (BrokenPipeError, TimeoutError):
                pass
            if self.wait(exit_timeout):
                self.wait_group(grace + 1.0)
                return "keys"
        self._stopping = True
        for name, sig in (("sighup", signal.SIGHUP), ("sigterm", signal.SIGTERM)):
            self.signal_group(sig)
            if sig == signal.SIGHUP:
                self.signal_group(signal.SIGCONT)
            if self.wait(grace):
                self.wait_group(grace + 1.0)
                return name
        self.signal_group(signal.SIGKILL)
        if self.wait(5.0):
            self.wait_group(2.0)
            return "sigkill"
        raise StopTimeout(f"process {self.pid} ({self.argv[0]}) survived SIGKILL")


def trees_usage(pids: Iterable[int]) -> dict[int, dict[str, float | int] | None]:
    """What each tool costs the machine now, by its process id: ``cpu_s`` (user and system
    seconds, cumulative, of the process and every descendant alive — an agent CLI runs node,
    a language server, shells …), ``rss_bytes`` (their resident memory together) and
    ``processes``. A caller turns two readings into a CPU share. None for a process gone.

    The process table is read once for all the trees, one file per process: asking each
    process for its children reads all of ``/proc`` each time, which for a hundred tools
    was most of the daemon's work."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for child, (ppid, _cpu, _rss) in table.items():
        children.setdefault(ppid, []).append(child)
    out: dict[int, dict[str, float | int] | None] = {}
    for pid in pids:
        cpu, rss, alive = 0.0, 0, 0
        todo, seen = [pid], set()
        while todo:
            one = todo.pop()
            if one in seen or one not in table:  # (gone, or a pid reused meanwhile)
                continue
            seen.add(one)
            todo.extend(children.get(one, ()))
            cpu += table[one][1]
            rss += table[one][2]
            alive += 1
        out[pid] = {"cpu_s": round(cpu, 3), "rss_bytes": rss, "processes": alive} \
            if alive else None
    return out


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _process_table() -> dict[int, tuple[int, float, int]]:
    """pid -> (ppid, cpu seconds, resident bytes) of every process: from ``/proc/<pid>/stat``
    where there is one (one read each), else through psutil."""
    if not os.path.exists("/proc/self/stat"):
        table = {}
        for proc in psutil.process_iter(["ppid", "cpu_times", "memory_info"]):
            info = proc.info
            times, mem = info.get("cpu_times"), info.get("memory_info")
            if isinstance(info.get("ppid"), int) and times is not None and mem is not None:
                table[proc.pid] = (info["ppid"], times.user + times.system, mem.rss)
        return table
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                text = fh.read()
        except OSError:
            continue  # it went meanwhile
        # "pid (comm) state ppid …": the name may hold spaces and brackets; the fields after
        # its last ")" are fixed (proc(5)): ppid 4th, utime 14th, stime 15th, rss 24th.
        fields = text[text.rfind(b")") + 2:].split()
        try:
            table[int(name)] = (int(fields[1]), (int(fields[11]) + int(fields[12]))
                                / _CLOCK_TICKS, int(fields[21]) * _PAGE)
        except (IndexError, ValueError):
            continue
    return table


def tree_usage(pid: int) -> dict[str, float | int] | None:
    """:func:`trees_usage` of one process."""
    return trees_usage([pid])[pid]
