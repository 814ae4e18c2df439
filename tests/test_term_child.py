"""PtyChild on real processes: honest spawn errors, size/env/cwd, output and exit on the loop,
stop() escalation that leaves no grandchild behind, pidfd exit detection, big writes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from aimterm.errors import SpawnError
from aimterm.term.child import PtyChild, trees_usage
from aimterm.term.loop import IOLoop
from tests.helpers import wait_for

BASH = ["bash", "--norc", "--noprofile", "-c"]


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


class Sink:
    """Collects what a child delivers, and on which thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: list[bytes] = []
        self.exits: list[tuple[int | None, int | None]] = []
        self.off_loop: list[str] = []  # callbacks that ran off the loop thread

    def on_data(self, data: bytes) -> None:
        if not IOLoop.shared().in_loop():
            self.off_loop.append("on_data")
        with self._lock:
            self._chunks.append(data)

    def on_exit(self, code: int | None, sig: int | None) -> None:
        if not IOLoop.shared().in_loop():
            self.off_loop.append("on_exit")
        self.exits.append((code, sig))

    def text(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode("utf-8", "replace")

    def wait_text(self, needle: str, timeout: float = 10.0) -> str:
        wait_for(lambda: needle in self.text(), f"output {needle!r}", timeout)
        return self.text()

    def wait_exit(self, timeout: float = 10.0) -> tuple[int | None, int | None]:
        wait_for(lambda: self.exits, "on_exit", timeout)
        return self.exits[0]


Spawn = Callable[..., tuple[PtyChild, Sink]]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start children; every one is stopped (and its group cleared) when the test ends."""
    children: list[PtyChild] = []

    def _spawn(argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
               rows: int = 24, cols: int = 80) -> tuple[PtyChild, Sink]:
        sink = Sink()
        child = PtyChild.spawn(argv, env=env if env is not None else dict(os.environ), cwd=cwd,
                               rows=rows, cols=cols, on_data=sink.on_data,
                               on_exit=sink.on_exit)
        children.append(child)
        return child, sink

    try:
        yield _spawn
    finally:
        for child in children:
            child.stop(grace=0.3)
            assert child.wait_group(10), f"process group of {child.pid} still has members"


def spawn_error(argv: list[str], **kwargs: object) -> SpawnError:
    with pytest.raises(SpawnError) as info:
        PtyChild.spawn(argv, env=kwargs.pop("env", dict(os.environ)),  # type: ignore[arg-type]
                       on_data=lambda _: None, on_exit=lambda *_: None, **kwargs)  # type: ignore[arg-type]
    return info.value


# -- spawn errors -------------------------------------------------------------------------------

def test_missing_command() -> None:
    err = spawn_error(["no-such-command-aimterm-xyz", "--flag"])
    assert "no-such-command-aimterm-xyz" in str(err)
    assert "not found" in str(err)
    assert err.argv == ["no-such-command-aimterm-xyz", "--flag"]
    assert err.code == "spawn_failed"


def test_missing_command_on_the_given_path(tmp_path: Path) -> None:
    err = spawn_error(["bash"], env={**os.environ, "PATH": str(tmp_path)})
    assert "'bash'" in str(err) and "not found" in str(err)


def test_missing_file_by_path(tmp_path: Path) -> None:
    err = spawn_error([str(tmp_path / "nope.sh")])
    assert "nope.sh" in str(err) and "no such file" in str(err)


def test_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    err = spawn_error([str(script)])
    assert "script.sh" in str(err)
    assert "not executable" in str(err)


def test_a_directory_is_not_a_command(tmp_path: Path) -> None:
    err = spawn_error([str(tmp_path)])
    assert "is a directory" in str(err)


def test_missing_cwd(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    err = spawn_error(["bash", "-c", "true"], cwd=str(missing))
    assert str(missing) in str(err)
    assert "does not exist" in str(err)


def test_empty_argv() -> None:
    err = spawn_error([])
    assert "empty" in str(err)


def test_exec_failure_is_reported_before_spawn_returns(tmp_path: Path) -> None:
    script = tmp_path / "bad-interpreter"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    err = spawn_error([str(script)])
    assert "bad-interpreter" in str(err)


def test_relative_command_is_found_in_cwd(spawn: Spawn, tmp_path: Path) -> None:
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello-from-cwd\n")
    script.chmod(0o755)
    child, sink = spawn(["./hello.sh"], cwd=str(tmp_path))
    assert sink.wait_exit() == (0, None)
    assert "hello-from-cwd" in sink.text()


# -- what the child sees ------------------------------------------------------------------------

def test_window_size_at_spawn(spawn: Spawn) -> None:
    _, sink = spawn([*BASH, "stty size"], rows=33, cols=101)
    assert sink.wait_exit() == (0, None)
    assert "33 101" in sink.text()


def test_window_size_seen_by_python(spawn: Spawn) -> None:
    _, sink = spawn([sys.executable, "-c",
                     "import os; s = os.get_terminal_size(); print(f'size {s.lines}x{s.columns}')"],
                    rows=17, cols=61)
    sink.wait_exit()
    assert "size 17x61" in sink.text()


def test_resize_reaches_the_child(spawn: Spawn) -> None:
    script = ("import os, signal, time\n"
              "def on(*_):\n"
              "    s = os.get_terminal_size()\n"
              "    print(f'winch {s.lines}x{s.columns}', flush=True)\n"
              "signal.signal(signal.SIGWINCH, on)\n"
              "print('ready', flush=True)\n"
              "while True: time.sleep(0.05)\n")
    child, sink = spawn([sys.executable, "-c", script])
    sink.wait_text("ready")
    child.resize(50, 132)
    sink.wait_text("winch 50x132")


def test_env_and_cwd_reach_the_child(spawn: Spawn, tmp_path: Path) -> None:
    env = {**os.environ, "AIMTERM_PROBE": "probe-value-42"}
    _, sink = spawn([*BASH, 'printf "[%s|%s]\\n" "$AIMTERM_PROBE" "$(pwd -P)"'], env=env,
                    cwd=str(tmp_path))
    assert sink.wait_exit() == (0, None)
    assert f"[probe-value-42|{os.path.realpath(tmp_path)}]" in sink.text()


def test_child_has_a_controlling_terminal_and_leads_its_session(spawn: Spawn) -> None:
    child, sink = spawn([sys.executable, "-c",
                         "import os; print('sid', os.getsid(0) == os.getpid(), "
                         "'pgid', os.getpgid(0) == os.getpid(), 'tty', os.isatty(0))"])
    sink.wait_exit()
    assert "sid True pgid True tty True" in sink.text()


# -- output and exit ----------------------------------------------------------------------------

def test_output_arrives_on_the_loop(spawn: Spawn, fakes: Path) -> None:
    child, sink = spawn([sys.executable, str(fakes / "echo_repl.py")])
    sink.wait_text("ready> ")
    child.write(b"hello there\r")
    sink.wait_text("echo: hello there")
    assert child.alive
    assert sink.off_loop == []


def test_exit_code_and_last_output(spawn: Spawn, fakes: Path) -> None:
    child, sink = spawn([sys.executable, str(fakes / "crash_on_start.py")])
    assert sink.wait_exit() == (3, None)
    assert "fatal: config file is corrupt" in sink.text()
    assert not child.alive
    assert child.returncode == 3 and child.signal is None
    assert sink.off_loop == []


def test_killed_by_signal(spawn: Spawn) -> None:
    child, sink = spawn([sys.executable, "-c",
                         "import os, signal; os.kill(os.getpid(), signal.SIGUSR1)"])
    assert sink.wait_exit() == (None, signal.SIGUSR1)
    assert child.signal == signal.SIGUSR1 and child.returncode is None


def test_output_written_just_before_exit_is_delivered(spawn: Spawn) -> None:
    _, sink = spawn([sys.executable, "-c",
                     "import sys; sys.stdout.write('x' * 100000 + 'LAST'); sys.stdout.flush()"])
    assert sink.wait_exit() == (0, None)
    assert sink.text().endswith("LAST")
    assert sink.text().count("x") == 100000


def test_write_after_exit_raises_broken_pipe(spawn: Spawn) -> None:
    child, sink = spawn([*BASH, "exit 0"])
    sink.wait_exit()
    with pytest.raises(BrokenPipeError):
        child.write(b"late\r")


def test_grandchild_holding_the_pty_does_not_hide_the_exit(spawn: Spawn) -> None:
    """The leader exits while a grandchild (ignoring SIGHUP) keeps the slave open: the exit is
    still seen at once (pidfd, not EOF), and the straggler is cleared afterwards."""
    holder = ("import os, signal, time\n"
              "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
              "print('holder', os.getpid(), flush=True)\n"
              "time.sleep(1000)\n")
    child, sink = spawn([*BASH, f'{sys.executable} -c "{holder}" & sleep 0.3; exit 5'])
    text = sink.wait_text("holder ")
    m = wait_for(lambda: re.search(r"holder (\d+)", sink.text()), "the holder's pid")
    assert m is not None
    holder_pid = int(m.group(1))
    assert sink.wait_exit() == (5, None), text
    assert child.wait_group(10), "the straggler was not cleared"
    wait_for(lambda: gone(holder_pid), f"holder {holder_pid} to be gone")


# -- stop ---------------------------------------------------------------------------------------

def grandchild_of(sink: Sink) -> int:
    m = wait_for(lambda: re.search(r"grandchild (\d+)", sink.text()), "'grandchild <pid>'")
    assert m is not None
    pid = int(m.group(1))
    assert psutil.pid_exists(pid)
    return pid


def test_stop_with_exit_keys(spawn: Spawn, fakes: Path) -> None:
    child, sink = spawn([sys.executable, str(fakes / "echo_repl.py")])
    sink.wait_text("ready> ")
    assert child.stop(exit_keys=b"exit\r") == "keys"
    assert sink.exits == [(0, None)]
    assert child.stop() == "exited"


def test_stop_with_a_sequence_of_exit_keys(spawn: Spawn, fakes: Path) -> None:
    child, sink = spawn([sys.executable, str(fakes / "echo_repl.py")])
    sink.wait_text("ready> ")
    assert child.stop(exit_keys=[b"ex", b"it", b"\r"]) == "keys"


def test_stop_without_keys_hangs_up(spawn: Spawn, fakes: Path) -> None:
    child, sink = spawn([sys.executable, str(fakes / "echo_repl.py")])
    sink.wait_text("ready> ")
    # A generous grace: on a loaded machine the REPL may take over a second to die of the
    # hang-up, and this test is about which signal ends it, not how fast.
    assert child.stop(grace=10.0) == "sighup"
    assert sink.exits == [(None, signal.SIGHUP)]


def test_stop_escalates_to_sigterm_and_clears_the_group(spawn: Spawn, fakes: Path) -> None:
    child, sink = spawn([sys.executable, str(fakes / "slow_exit.py")],
                        env={**os.environ, "FAKE_HONOUR_TERM": "1"})
    grandchild = grandchild_of(sink)
    sink.wait_text("slow> ")
    assert child.stop(grace=1.0) == "sigterm"
    assert sink.exits == [(143, None)]
    wait_for(lambda: gone(grandchild), f"grandchild {grandchild} to be gone")


def test_stop_escalates_to_sigkill_and_clears_the_group(spawn: Spawn, fakes: Path) -> None:
    child, sink = spawn([sys.executable, str(fakes / "slow_exit.py")])
    grandchild = grandchild_of(sink)
    sink.wait_text("slow> ")
    assert child.stop(grace=0.3) == "sigkill"
    assert sink.exits == [(None, signal.SIGKILL)]
    wait_for(lambda: gone(grandchild), f"grandchild {grandchild} to be gone")


def test_exit_keys_that_work_too_slowly_escalate(spawn: Spawn, fakes: Path) -> None:
    child, sink = spawn([sys.executable, str(fakes / "slow_exit.py")],
                        env={**os.environ, "FAKE_EXIT_DELAY": "30"})
    grandchild = grandchild_of(sink)
    sink.wait_text("slow> ")
    assert child.stop(exit_keys=b"quit\r", exit_timeout=0.3, grace=0.3) == "sigkill"
    wait_for(lambda: gone(grandchild), f"grandchild {grandchild} to be gone")


def test_exit_keys_leave_no_grandchild(spawn: Spawn, fakes: Path) -> None:
    child, sink = spawn([sys.executable, str(fakes / "slow_exit.py")],
                        env={**os.environ, "FAKE_EXIT_DELAY": "0"})
    grandchild = grandchild_of(sink)
    sink.wait_text("slow> ")
    assert child.stop(exit_keys=b"quit\r") == "keys"
    assert sink.exits == [(0, None)]
    wait_for(lambda: gone(grandchild), f"grandchild {grandchild} to be gone")


def test_stop_from_the_loop_thread_is_refused(spawn: Spawn, fakes: Path) -> None:
    child, sink = spawn([sys.executable, str(fakes / "echo_repl.py")])
    sink.wait_text("ready> ")
    with pytest.raises(RuntimeError, match="block the reader loop"):
        IOLoop.shared().run_sync(child.stop)
    assert child.alive


def test_stop_from_an_on_data_callback_is_refused(fakes: Path) -> None:
    errors: list[BaseException] = []
    holder: list[PtyChild] = []

    def on_data(_: bytes) -> None:
        if holder and not errors:
            try:
                holder[0].stop()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

    child = PtyChild.spawn([sys.executable, str(fakes / "echo_repl.py")], env=dict(os.environ),
                           on_data=on_data, on_exit=lambda *_: None)
    try:
        holder.append(child)
        child.write(b"ping\r")
        wait_for(lambda: errors, "stop() inside on_data to fail")
        assert isinstance(errors[0], RuntimeError)
    finally:
        child.stop(exit_keys=b"exit\r")


# -- writing ------------------------------------------------------------------------------------

def test_large_paste_to_a_raw_reader_does_not_deadlock(spawn: Spawn) -> None:
    size = 200 * 1024
    reader = ("import os, sys, tty\n"
              "tty.setraw(0)\n"
              "os.write(1, b'ready\\r\\n')\n"
              f"n = 0\nwhile n < {size}:\n"
              "    n += len(os.read(0, 65536))\n"
              "os.write(1, f'got {n}\\r\\n'.encode())\n")
    child, sink = spawn([sys.executable, "-c", reader])
    sink.wait_text("ready")
    child.write(os.urandom(size // 2).hex().encode(), timeout=10)
    sink.wait_text(f"got {size}")
    assert sink.wait_exit() == (0, None)


def test_large_paste_to_cat_with_echo_does_not_deadlock(spawn: Spawn) -> None:
    """Cooked mode echoes everything back while we write: the loop must keep draining."""
    line = b"x" * 99 + b"\n"
    paste = line * (200 * 1024 // len(line))
    child, sink = spawn([*BASH, "cat > /dev/null; echo cat-finished"])
    child.write(paste, timeout=10)
    child.write(b"\x04")
    sink.wait_text("cat-finished")
    assert sink.wait_exit() == (0, None)


STOPS_READING = ("import os, sys, time, tty\n"
                 "tty.setraw(0)\n"
                 "os.write(1, b'ready\\r\\n')\n"
                 "time.sleep(60)\n")


def test_a_tool_that_stops_reading_never_stalls_the_loop(spawn: Spawn) -> None:
    """The PTY's buffer fills; the write returns at once, the rest waits, and the shared loop
    goes on serving every other terminal meanwhile."""
    stuck, stuck_sink = spawn([sys.executable, "-c", STOPS_READING])
    stuck_sink.wait_text("ready")
    echo, echo_sink = spawn([*BASH, "cat"])
    started = time.monotonic()
    stuck.write(b"x" * (256 * 1024))
    assert time.monotonic() - started < 1.0  # (it used to wait up to 10 s for room)
    assert 0 < stuck.write_backlog <= 256 * 1024
    echo.write(b"still-served\r")
    echo_sink.wait_text("still-served", timeout=5)
    assert time.monotonic() - started < 3.0
    # The backlog is bounded: past a MiB waiting, the write is refused, not queued.
    with pytest.raises(TimeoutError, match="stopped reading"):
        stuck.write(b"y" * (1 << 20))
    # And writes keep their order: what waits goes first once the tool reads again.
    stuck.signal_group(signal.SIGKILL)
    stuck_sink.wait_exit()
    assert stuck.write_backlog == 0
    with pytest.raises(BrokenPipeError):
        stuck.write(b"z")
    echo.write(b"\x04")
    echo_sink.wait_exit()


def test_backlog_goes_out_in_order_once_the_tool_reads(spawn: Spawn) -> None:
    late_reader = ("import os, sys, time, tty\n"
                   "tty.setraw(0)\n"
                   "os.write(1, b'ready\\r\\n')\n"
                   "time.sleep(1.0)\n"
                   "data = b''\n"
                   "while not data.endswith(b'END'):\n"
                   "    data += os.read(0, 65536)\n"
                   "ok = data == b'a' * 100000 + b'b' * 100000 + b'END'\n"
                   "os.write(1, b'in order\\r\\n' if ok else b'garbled\\r\\n')\n")
    child, sink = spawn([sys.executable, "-c", late_reader])
    sink.wait_text("ready")
    child.write(b"a" * 100000)
    child.write(b"b" * 100000)
    child.write(b"END")
    assert child.write_backlog > 0  # the tool is asleep: most of it waits
    sink.wait_text("in order", timeout=10)
    assert child.write_backlog == 0
    assert sink.wait_exit() == (0, None)


def test_a_tool_starts_with_default_signals_whatever_its_parent_ignores(
        spawn: Spawn, fakes: Path) -> None:
    # Under nohup the parent ignores SIGHUP, and an ignored signal survives exec: the child
    # must still die of the hang-up that stop() sends.
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        child, sink = spawn([sys.executable, str(fakes / "echo_repl.py")])
    finally:
        signal.signal(signal.SIGHUP, old)
    sink.wait_text("ready> ")
    assert child.stop(grace=10.0) == "sighup"
    assert sink.exits == [(None, signal.SIGHUP)]


def test_trees_usage_counts_each_tree_once_and_a_gone_process_as_none() -> None:
    # Two trees: a shell with two children, and a lone sleep.
    shell = subprocess.Popen(["bash", "-c", "sleep 30 & sleep 30 & wait"])
    lone = subprocess.Popen(["sleep", "30"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    try:
        wait_for(lambda: len(psutil.Process(shell.pid).children()) == 2, "the shell's children")
        got = trees_usage([shell.pid, lone.pid, gone.pid])
        assert got[gone.pid] is None
        shell_tree, lone_tree = got[shell.pid], got[lone.pid]
        assert shell_tree is not None and lone_tree is not None
        assert shell_tree["processes"] == 3 and lone_tree["processes"] == 1
        assert shell_tree["rss_bytes"] > lone_tree["rss_bytes"] > 0
    finally:
        for proc in (shell, lone):
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait()


def test_the_pty_process_has_the_attributes_ptyprocess_gives_it() -> None:
    import ptyprocess

    from aimterm.term.child import _PtyProcess

    fds = os.pipe()
    try:
        stock = ptyprocess.PtyProcess(0, fds[0])
        ours = _PtyProcess(0, fds[1])
        assert set(vars(ours)) == set(vars(stock))
        assert {k: v for k, v in vars(ours).items() if k not in ("fd", "fileobj")} == \
            {k: v for k, v in vars(stock).items() if k not in ("fd", "fileobj")}
        ours.closed = stock.closed = True  # (no finaliser: the files are closed below)
        ours.fileobj.close()
        stock.fileobj.close()
        for fd in fds:  # closing the file closed its fd, as the pair's did
            with pytest.raises(OSError):
                os.fstat(fd)
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
