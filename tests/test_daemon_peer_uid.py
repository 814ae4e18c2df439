"""The daemon's control socket refuses other users, end to end.

A real daemon (``python -m aimterm.daemon``) runs in a subprocess on a temporary state dir
with two fake echo instances. A forked child that has become uid/gid 65534 (nobody) tries to
use its socket:

- with the permissions the daemon sets (state dir 0700, socket 0600) the child cannot even
  connect: the file system is the first barrier;
- with those permissions loosened on purpose, the connection reaches the server, and the
  ``SO_PEERCRED`` check is what refuses it: one ``permission_denied`` reply, no hello, no
  answer to the request, then the server hangs up.

In both cases the daemon keeps serving its owner and records nothing about the intruder in
its history. Connecting as another uid needs root, so without root the module is skipped.
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import ECHO, FAKES, wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root: the test connects to the daemon as uid 65534 (nobody), and only "
           "root can switch to another uid")

#: The uid and gid the forked child switches to.
NOBODY = 65534
#: A ping request exactly as it goes on the wire (docs/protocol.md): one JSON object, one line.
PING = b'{"v":1,"id":1,"op":"ping","args":{}}\n'
#: How long the forked child may take to report back.
CHILD_TIMEOUT_S = 15.0


# -- a real daemon on a temporary state dir -------------------------------------------------------


@dataclass
class Daemon:
    """A daemon subprocess serving ``state``, with the environment the CLI needs to reach it."""

    root: Path
    config: Path
    state: Path
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.state / "control.sock"

    def cli(self, *args: str) -> str:
        """Run ``aimterm ARGS -c CONFIG``; it must succeed. Returns its stdout."""
        out = subprocess.run([sys.executable, "-m", "aimterm", *args, "-c", str(self.config)],
                             capture_output=True, text=True, env=self.env, timeout=30)
        assert out.returncode == 0, f"{args}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.cli("cluster", "status", "--json"))
        return data

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.cli("events", "--json").splitlines()
                if line.strip()]

    def stop(self) -> int:
        """SIGTERM (a graceful stop), reap it; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


def cluster_processes(state: Path) -> list[psutil.Process]:
    """The live processes started for the cluster of ``state`` (marked in their environment)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if (proc.status() != psutil.STATUS_ZOMBIE
                    and proc.environ().get("AIMTERM_CLUSTER") == str(state)):
                found.append(proc)
        except (psutil.Error, OSError):
            pass
    return found


def call(path: Path, line: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Connect to ``path`` with a bare socket, send one request line; returns the server's
    first message (the hello) and its next one (the reply)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5.0)
        sock.connect(str(path))
        with sock.makefile("rb") as reader:
            first = reader.readline()
            sock.sendall(line)
            reply = reader.readline()
    assert first.endswith(b"\n") and reply.endswith(b"\n"), (first, reply)
    return json.loads(first), json.loads(reply)


def answers(d: Daemon) -> bool:
    """Whether the daemon answers a ping on its socket (and is still running)."""
    if d.proc.poll() is not None:
        raise AssertionError(f"the daemon exited with status {d.proc.returncode}:\n"
                             + "\n".join(d.log_lines()))
    try:
        call(d.socket, PING)
    except OSError:
        return False
    return True


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    """A daemon with two idle echo instances, stopped and reaped (with its instances) after
    the test whatever happened."""
    # Not tmp_path: a Unix socket path has at most 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="atp-", dir="/tmp"))
    # uid 65534 may traverse the test's own folder, so the barriers the tests meet are the
    # daemon's: its state dir and its socket.
    root.chmod(0o711)
    adapters = root / "adapters"
    adapters.mkdir()
    (adapters / "echo.yaml").write_text(
        ECHO.replace("{fakes}", str(FAKES)).replace("{py}", sys.executable))
    config = root / "cluster.yaml"
    config.write_text("state_dir: state\n"
                      "instances:\n"
                      "  - adapter: echo\n"
                      "    count: 2\n")
    env = dict(os.environ, AIMTERM_ADAPTER_PATH=str(adapters),
               XDG_STATE_HOME=str(root / "xdg-state"), XDG_CONFIG_HOME=str(root / "xdg-config"))
    state = root / "state"
    log = root / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "aimterm.daemon", "-c", str(config),
                                 "--state-dir", str(state)],
                                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    d = Daemon(root, config, state, env, log, proc)
    try:
        wait_for(lambda: answers(d), "the daemon to answer a ping", timeout=20)
        wait_for(lambda: call(d.socket, b'{"v":1,"id":2,"op":"status"}\n')[1]["result"]["ready"],
                 "the instances to be idle", timeout=20)
        yield d
    finally:
        d.stop()
        for proc in cluster_processes(state):
            try:
                proc.kill()
            except psutil.Error:
                pass
        shutil.rmtree(root, ignore_errors=True)


# -- a child process running as nobody -----------------------------------------------------------


def as_nobody(action: Callable[[], dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """Run ``action`` in a forked child that has dropped to uid/gid 65534 with no
    supplementary groups. Returns the child's pid and the report ``action`` returned (sent
    as JSON through a pipe); the child is always reaped."""
    rfd, wfd = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads; the child only makes
        # system calls and leaves with os._exit, never returning into the test runner.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(rfd)
            try:
                # The peer credentials of a connection are taken at connect(): drop first.
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                found = action()
                found["ids"] = [os.getuid(), os.geteuid(), os.getgid(), os.getegid()]
            except BaseException:
                found = {"child_error": traceback.format_exc()}
            data = json.dumps(found).encode()
            while data:
                data = data[os.write(wfd, data):]
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([rfd], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"the child (uid {NOBODY}) did not report within "
                                     f"{CHILD_TIMEOUT_S:g}s")
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(rfd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"the child failed: status {status}"
    report: dict[str, Any] = json.loads(b"".join(chunks))
    assert "child_error" not in report, report["child_error"]
    assert report["ids"] == [NOBODY] * 4, report
    return pid, report


def try_connect(path: Path) -> Callable[[], dict[str, Any]]:
    """An action for :func:`as_nobody`: connect to ``path``; report the error, if any."""
    def action() -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5.0)
            try:
                sock.connect(str(path))
            except OSError as exc:
                return {"connected": False, "error": type(exc).__name__, "errno": exc.errno}
            return {"connected": True}
    return action


def ping_and_read(path: Path) -> Callable[[], dict[str, Any]]:
    """An action for :func:`as_nobody`: connect to ``path``, send a ping at once, then read
    everything the server sends until it hangs up."""
    def action() -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(3.0)
            sock.connect(str(path))
            try:
                sock.sendall(PING)
                sent = True
            except (BrokenPipeError, ConnectionResetError):
                sent = False  # the server hung up before the request went out
            data = b""
            how = "eof"
            while True:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    # The server closed with our ping unread in its queue: Linux then ends the
                    # stream with ECONNRESET instead of EOF (after the data it did send).
                    how = "reset"
                    break
                except TimeoutError:
                    how = "timeout"  # still open: the server did not hang up
                    break
                if not chunk:
                    break
                data += chunk
            return {"sent": sent, "received": data.decode(), "end": how}
    return action


def root_ping(d: Daemon) -> None:
    """A ping from this process (root, the daemon's own uid) gets the hello and its answer."""
    first, reply = call(d.socket, PING)
    assert first["hello"]["pid"] == d.proc.pid, first
    assert reply == {"v": 1, "id": 1, "ok": True, "result": {"pong": True, "pid": d.proc.pid}}


def assert_serving(d: Daemon) -> None:
    """The daemon still answers ``aimterm cluster status`` with its fleet idle and whole."""
    status = d.status()
    assert status["daemon"]["pid"] == d.proc.pid
    assert status["ready"]
    assert [(r["id"], r["state"], r["restarts"]) for r in status["instances"]] == [
        ("echo-1", "idle", 0), ("echo-2", "idle", 0)]


# -- the tests ------------------------------------------------------------------------------------


def test_another_uid_is_refused_by_the_peer_uid_check(daemon: Daemon) -> None:
    """With the file barrier removed, the server itself refuses uid 65534: one
    ``permission_denied`` reply with ``id: null``, no hello, then the connection is closed.
    The server refuses on accept, before reading anything, so the child's ping may or may
    not get out before the hang-up; either way it is never answered. The owner is served
    before and after, and the daemon records nothing but one warning."""
    root_ping(daemon)  # the same request from the owner's uid works: the check can fail
    before = daemon.events()

    # Only for this test: open the state dir to traversal and the socket to everyone, so
    # that the file permissions no longer stop uid 65534 and the only thing that can refuse
    # the connection is the server's SO_PEERCRED check.
    daemon.state.chmod(0o711)
    daemon.socket.chmod(0o666)
    child, report = as_nobody(ping_and_read(daemon.socket))

    lines = report["received"].splitlines(keepends=True)
    assert len(lines) == 1 and lines[0].endswith("\n"), report
    reply = json.loads(lines[0])
    assert "hello" not in reply
    assert reply == {"v": 1, "id": None, "ok": False, "error": {
        "code": "permission_denied", "exit_code": 23, "expected": True,
        "message": f"the control socket {daemon.socket} belongs to uid 0; "
                   f"uid {NOBODY} may not use it"}}
    # The server hung up (ECONNRESET if it closed with the ping unread), ping unanswered.
    assert report["end"] in ("eof", "reset"), report
    print(f"uid {NOBODY} got: {lines[0].strip()} then {report['end']} "
          f"(ping sent: {report['sent']})")

    root_ping(daemon)
    assert_serving(daemon)
    assert daemon.events() == before  # the refusal is not an event of the cluster
    assert daemon.stop() == 0
    log = daemon.log_lines()
    warnings_ = [line for line in log if " WARNING " in line]
    assert len(warnings_) == 1 and warnings_[0].endswith(
        f"aimterm.ipc.server: refused a connection to {daemon.socket} "
        f"from uid {NOBODY} (pid {child})"), "\n".join(log)
    assert not [line for line in log if " ERROR " in line or " CRITICAL " in line
                or "Traceback" in line], "\n".join(log)


def test_another_uid_cannot_reach_the_socket_with_the_default_permissions(
        daemon: Daemon) -> None:
    """With the permissions the daemon sets, uid 65534 cannot even connect (EACCES): the
    state dir (0700) stops it, and so does the socket (0600) alone. The server never sees the
    attempt and keeps serving its owner."""
    assert stat.S_IMODE(os.stat(daemon.state).st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(daemon.socket).st_mode) == 0o600
    assert os.stat(daemon.state).st_uid == os.lstat(daemon.socket).st_uid == 0
    before = daemon.events()

    _, report = as_nobody(try_connect(daemon.socket))
    assert report == {"connected": False, "error": "PermissionError", "errno": errno.EACCES,
                      "ids": [NOBODY] * 4}

    # Even with the state dir open to traversal, the socket's own mode still keeps it out.
    daemon.state.chmod(0o711)
    _, report = as_nobody(try_connect(daemon.socket))
    assert report == {"connected": False, "error": "PermissionError", "errno": errno.EACCES,
                      "ids": [NOBODY] * 4}

    root_ping(daemon)
    assert_serving(daemon)
    assert daemon.events() == before
    assert daemon.stop() == 0
    log = daemon.log_lines()
    assert not [line for line in log if "refused a connection" in line], "\n".join(log)
    assert not [line for line in log if " WARNING " in line or " ERROR " in line
                or "Traceback" in line], "\n".join(log)
