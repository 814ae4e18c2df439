"""The terminal hand-over gives the terminal back whole.

``aimterm attach`` runs on a PTY that the test owns both ends of, so it can read every byte
the command drew and the termios settings of the "user's" terminal before, during and after.
The instance's tool goes full-screen while attached (alternate screen, bracketed paste, mouse
reporting, hidden cursor); on detach those modes must be turned off and termios restored.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator

import pytest

from aimterm.cli.handover import LEAVE_ALTERNATE, RESET_MODES, Handover, detach_byte
from tests.helpers import FAKES, wait_for
from tests.test_daemon import Cluster, cluster, up  # noqa: F401  (the fixture)

FULLSCREEN = """
command: ["{py}", "{fakes}/fullscreen_cli.py"]
detect: stream
states: [{state: idle, region: bottom:1, any: ['^fs> ?$']}]
settle_ms: 0
submit: {keys: [enter], verify: output}
reply: {from: stream, strip: [echo, prompt]}
exit: {keys: [quit, enter], timeout_s: 3}
"""

#: What the user's terminal must receive last: the tool's modes off, then a new line.
RESTORED = LEAVE_ALTERNATE + RESET_MODES + b"\r\n"


class Tty:
    """Both ends of a PTY: the command runs on the slave, the test reads the master."""

    def __init__(self, rows: int = 24, cols: int = 80) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.seen = b""

    def read_until(self, wanted: bytes, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while wanted not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {wanted!r}; the terminal got "
                                     f"...{self.seen[-300:]!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                self.seen += os.read(self.master, 65536)
        return self.seen

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def fullscreen_cluster(cluster: Cluster) -> Iterator[Cluster]:  # noqa: F811
    (cluster.root / "adapters" / "fullscreen.yaml").write_text(
        FULLSCREEN.replace("{py}", sys.executable).replace("{fakes}", str(FAKES)))
    cluster.config.write_text("state_dir: state\ninstances:\n  - adapter: fullscreen\n"
                              "    count: 1\n")
    yield cluster


def states(c: Cluster) -> dict[str, str]:
    return {r["id"]: r["state"] for r in c.status()["instances"]}


def attach_full_screen(c: Cluster, tty: Tty) -> subprocess.Popen[bytes]:
    """``aimterm attach`` on ``tty``, with the instance's tool switched to full screen."""
    proc = subprocess.Popen([sys.executable, "-m", "aimterm", "attach", "fullscreen-1",
                             "-c", str(c.config)], stdin=tty.slave, stdout=tty.slave,
                            stderr=tty.slave, env=c.env, start_new_session=True)
    tty.read_until(b"fs>")  # the screen is redrawn first
    wait_for(lambda: not termios.tcgetattr(tty.slave)[3] & termios.ICANON,
             "the attach to put the terminal in raw mode")
    wait_for(lambda: states(c)["fullscreen-1"] == "attached", "the instance to be attached")
    tty.seen = b""
    os.write(tty.master, b"full\r")
    tty.read_until(b"FULL SCREEN")
    assert b"\x1b[?1049h" in tty.seen and b"\x1b[?2004h" in tty.seen
    return proc


@pytest.mark.parametrize("leave", ["detach key", "SIGTERM"])
def test_leaving_restores_modes_and_termios(fullscreen_cluster: Cluster, leave: str) -> None:
    c = fullscreen_cluster
    up(c)
    tty = Tty()
    before = termios.tcgetattr(tty.slave)
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = attach_full_screen(c, tty)
        if leave == "detach key":
            os.write(tty.master, b"\x1d")  # Ctrl-]
            assert proc.wait(10) == 0
        else:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 128 + signal.SIGTERM
        out = tty.read_until(RESTORED)
        assert out.endswith(RESTORED), out[-200:]
        assert termios.tcgetattr(tty.slave) == before
        # Either way the instance was given back to automation.
        wait_for(lambda: states(c)["fullscreen-1"] != "attached", "the instance to be given back")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        tty.close()
    c.cli("cluster", "down")


# -- the hand-over itself, on a PTY of its own -----------------------------------------------


def test_alternate_screen_is_left_only_when_the_tool_entered_it() -> None:
    """``?1049l`` on the main screen restores the saved cursor (to the top left if none was
    saved), so it is sent only when the tool's output switched to the alternate screen —
    even when that sequence came split over two writes."""
    tty = Tty()
    try:
        before = termios.tcgetattr(tty.slave)
        with Handover(tty.slave, tty.slave) as hand:
            assert not termios.tcgetattr(tty.slave)[3] & termios.ICANON
            hand.write(b"plain\r\n\x1b[?2004h")
        assert tty.read_until(RESET_MODES + b"\r\n").endswith(
            b"plain\r\n\x1b[?2004h" + RESET_MODES + b"\r\n")
        assert LEAVE_ALTERNATE not in tty.seen
        assert termios.tcgetattr(tty.slave) == before

        tty.seen = b""
        with Handover(tty.slave, tty.slave) as hand:
            hand.write(b"\x1b[?10")
            hand.write(b"49h full screen")
        assert tty.read_until(RESTORED).endswith(b"full screen" + RESTORED)

        tty.seen = b""
        with Handover(tty.slave, tty.slave) as hand:
            hand.write(b"\x1b[?1049;2004h in and out \x1b[?1049l")
        assert tty.read_until(RESET_MODES + b"\r\n").endswith(
            b"in and out \x1b[?1049l" + RESET_MODES + b"\r\n")
        assert termios.tcgetattr(tty.slave) == before
    finally:
        tty.close()


def test_pump_sends_keys_until_the_detach_key_and_restores_on_error() -> None:
    tty = Tty()
    sent: list[bytes] = []
    try:
        before = termios.tcgetattr(tty.slave)
        with Handover(tty.slave, tty.slave, send=sent.append) as hand:
            os.write(tty.master, b"abc\x1ddropped")
            assert hand.pump() == "detached"
        assert sent == [b"abc"]

        def broken(_data: bytes) -> None:
            raise OSError("the instance is gone")

        with pytest.raises(OSError, match="gone"):
            with Handover(tty.slave, tty.slave, send=broken) as hand:
                hand.write(b"\x1b[?1049h")
                os.write(tty.master, b"x")
                hand.pump()
        assert tty.read_until(RESTORED).endswith(RESTORED)
        assert termios.tcgetattr(tty.slave) == before
    finally:
        tty.close()


def test_detach_key_names() -> None:
    assert detach_byte("ctrl-]") == b"\x1d"
    assert detach_byte("^A") == b"\x01"
    assert detach_byte("q") == b"q"
    with pytest.raises(ValueError, match="expected ctrl-"):
        detach_byte("ctrl-1")


LOCAL = """
import sys
from aimterm.cli.local_attach import attach_local
from aimterm.session import Session
from tests.helpers import fake_adapter
from tests.test_handover import FULLSCREEN

with Session(fake_adapter(FULLSCREEN, "fullscreen")) as session:
    how = attach_local(session)
    print("attach_local:", how)
"""


def test_in_process_attach_restores_the_terminal_too() -> None:
    """The in-process attach of ``aimterm adapter record`` uses the same hand-over."""
    tty = Tty()
    before = termios.tcgetattr(tty.slave)
    proc = subprocess.Popen([sys.executable, "-c", LOCAL], stdin=tty.slave, stdout=tty.slave,
                            stderr=tty.slave, cwd=str(FAKES.parent.parent),
                            start_new_session=True)
    try:
        tty.read_until(b"fs>")
        wait_for(lambda: not termios.tcgetattr(tty.slave)[3] & termios.ICANON,
                 "the attach to put the terminal in raw mode")
        os.write(tty.master, b"full\r")
        tty.read_until(b"FULL SCREEN")
        os.write(tty.master, b"\x1d")
        out = tty.read_until(b"attach_local: detached")
        assert RESTORED + b"attach_local: detached" in out, out[-200:]
        assert proc.wait(10) == 0
        assert termios.tcgetattr(tty.slave) == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        tty.close()
