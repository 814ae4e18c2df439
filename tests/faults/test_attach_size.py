"""An attach from a small terminal borrows the instance at that size; detach gives it back at
its own, so later turns (and restarts) see the screen the adapter was written for."""

from __future__ import annotations

from aimterm.session import Session
from aimterm.states import State
from tests.helpers import SPINNER, fake_adapter


def test_detach_gives_the_instance_back_at_its_own_size() -> None:
    s = Session(fake_adapter(SPINNER), env={"FAKE_THINK": "0.1"})
    s.start()
    try:
        own = (s.rows, s.cols)
        assert own == (24, 80)
        s.attach()
        s.resize(10, 30)  # the attacher's terminal
        assert (s.terminal.screen.rows, s.terminal.screen.cols) == (10, 30)  # type: ignore[union-attr]
        assert s.detach() in (State.IDLE, State.BUSY)
        assert (s.rows, s.cols) == own
        assert (s.terminal.screen.rows, s.terminal.screen.cols) == own  # type: ignore[union-attr]
        s.wait_state(State.IDLE, timeout=10)
        turn = s.send("after the attach", timeout=20)
        assert turn.ok and "after the attach" in turn.reply
        # A restart starts at the instance's own size too.
        s.restart()
        assert (s.terminal.screen.rows, s.terminal.screen.cols) == own  # type: ignore[union-attr]
        # Outside an attach, a resize is the instance's own from then on.
        s.resize(30, 100)
        s.attach()
        s.resize(5, 20)
        s.detach()
        assert (s.rows, s.cols) == (30, 100)
    finally:
        s.stop()
