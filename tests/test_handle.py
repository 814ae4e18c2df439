"""The pool drives its tools only through the SessionHandle protocol.

Each instance's session is wrapped in a proxy that exposes exactly the protocol's members and
raises on anything else (a terminal, a loop, a private method): a pool that reached into a
session would fail here. The fleet then goes through what used to need such reach-ins — a
turn timeout (the screen's tail for the error), a crash and its back-off, a restart by hand
during the back-off, a drain, a shutdown whose polite stop fails.
"""

from __future__ import annotations

import inspect
import os
import signal
from typing import Any

import pytest

from aimterm.errors import TurnTimeout
from aimterm.events import InstanceRestarting
from aimterm.handle import SessionHandle
from aimterm.host.placement import SessionHosts
from aimterm.pool import GroupSpec, Pool, RestartPolicy
from aimterm.session import Session
from aimterm.states import State
from tests.helpers import ECHO, SPINNER, fake_adapter, wait_for

#: Every member of the protocol: its methods, properties and declared attributes.
MEMBERS = frozenset(
    {name for name, _ in inspect.getmembers(SessionHandle) if not name.startswith("_")}
    | set(SessionHandle.__annotations__))


class OnlyTheHandle:
    """A session seen through the protocol and nothing more."""

    def __init__(self, session: Session) -> None:
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "used", set())

    def __getattr__(self, name: str) -> Any:
        if name not in MEMBERS:
            raise AttributeError(f"{name!r} is not part of SessionHandle")
        self.used.add(name)
        return getattr(self._session, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in MEMBERS:
            raise AttributeError(f"{name!r} is not part of SessionHandle")
        setattr(self._session, name, value)


def test_a_session_is_a_handle() -> None:
    session = Session(fake_adapter(ECHO), instance_id="h")
    assert isinstance(session, SessionHandle)
    for name in MEMBERS:
        assert hasattr(session, name), name
    assert {"start", "start_turn", "answer", "interrupt", "stop", "kill", "backoff", "fatal",
            "cancel_backoff", "status", "screen_lines", "subscribe"} <= MEMBERS


@pytest.mark.parametrize("where", ["here", "hosts"])
def test_the_pool_needs_nothing_but_the_handle(where: str) -> None:
    """The same fleet, its sessions here or in two session hosts."""
    made: list[OnlyTheHandle] = []
    hosts = SessionHosts(2) if where == "hosts" else None

    def sessions(*args: Any, **kwargs: Any) -> OnlyTheHandle:
        handle = OnlyTheHandle(Session(*args, **kwargs) if hosts is None
                               else hosts(*args, **kwargs))
        made.append(handle)
        return handle

    spin = GroupSpec(fake_adapter(SPINNER, "spin"), count=1, env={"FAKE_THINK": "30"})
    echo = GroupSpec(fake_adapter(ECHO, "echo"), count=2)
    pool = Pool([spin, echo], restart=RestartPolicy(backoff_s=30.0), sessions=sessions)
    events: list[Any] = []
    pool.bus.subscribe(events.append)
    try:
        pool.start(timeout=30)
        assert pool.send("hello", tool="echo").reply == "echo: hello"
        # A turn past its timeout: the error carries the screen's tail, the instance is
        # interrupted and given back.
        with pytest.raises(TurnTimeout) as info:
            pool.submit("think long", tool="spin", timeout=1.0).result(20)
        assert info.value.screen_tail
        wait_for(lambda: pool.instance("spin-1").state is State.IDLE, "spin-1 given back",
                 timeout=15)
        # A crash goes to a long back-off; a restart by hand cuts it short.
        victim = pool.instance("echo-1")
        os.kill(victim.session.pid or 0, signal.SIGKILL)
        wait_for(lambda: victim.state is State.BACKOFF, "echo-1 backing off")
        assert any(isinstance(e, InstanceRestarting) for e in events)
        assert pool.restart_instance("echo-1", timeout=20) is State.IDLE
        assert pool.send("again", to="echo-1").reply == "echo: again"
        assert pool.screen("echo-1")
        pool.drain("echo-2").result(15)
        assert [r["id"] for r in pool.status()] == ["echo-1", "spin-1"]
    finally:
        pool.shutdown(timeout=10)
        if hosts is not None:
            hosts.close()
    used = set().union(*(h.used for h in made))
    assert {"start", "start_turn", "screen_tail", "interrupt", "cancel_backoff", "stop",
            "status", "screen_lines", "close"} <= used
    assert not [h.id for h in made if h.pid is not None and _alive(h.pid)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
