"""Session hosts: a fleet spread over processes behaves as one on a single loop.

Real host processes, real tools under PTYs in them. What is checked is what sharding could
break: each instance's events in causal order, every prompt answered once and only once with
its own reply, and nothing lost or left running when tools, or a whole host, are killed while
the fleet is loaded.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from aimterm.errors import NotReady, SessionExited, SpawnError
from aimterm.events import (
    Event,
    EventBus,
    InstanceRestarting,
    ProcessExited,
    StateChanged,
    TurnFinished,
    TurnRetried,
    TurnStarted,
)
from aimterm.host.link import HostLink
from aimterm.host.proxy import HostedSession
from aimterm.host.wire import (
    MAX_FRAME,
    FrameReader,
    decode_error,
    decode_event,
    encode_error,
    encode_event,
    frame,
)
from aimterm.pool import GroupSpec, Pool, RestartPolicy
from aimterm.procs import pid_alive
from aimterm.states import TRANSITIONS, State
from aimterm.term.loop import IOLoop
from aimterm.turn import Turn
from tests.helpers import CONFIRM, ECHO, SPINNER, fake_adapter, wait_for

# -- the wire --------------------------------------------------------------------------------


def test_frames_cut_anywhere_come_out_whole_and_in_order() -> None:
    data = frame([("a", 1)]) + frame([("b", b"\x00" * 70_000), ("c", None)]) + frame([])
    for step in (1, 3, 4096, len(data)):
        reader = FrameReader()
        got: list[Any] = []
        for i in range(0, len(data), step):
            got.extend(reader.feed(data[i:i + step]))
        assert got == [[("a", 1)], [("b", b"\x00" * 70_000), ("c", None)], []]


def test_a_frame_over_the_limit_is_refused_before_it_is_read() -> None:
    reader = FrameReader()
    with pytest.raises(ValueError, match="over the"):
        list(reader.feed((MAX_FRAME + 1).to_bytes(4, "big") + b"x"))


def test_events_and_errors_cross_the_link_as_they_were() -> None:
    events: list[Event] = [
        StateChanged("x-1", old=State.IDLE, new=State.BUSY, reason="turn started", rule="r",
                     text="t"),
        TurnFinished("x-1", turn=3, status="done", submit_to_busy_ms=1.5),
        ProcessExited("x-1", pid=42, returncode=None, signal=9),
    ]
    for event in events:
        back = decode_event(encode_event(event))
        assert back == event and type(back) is type(event)
    back_state = decode_event(encode_event(events[0]))
    assert isinstance(back_state, StateChanged) and back_state.new is State.BUSY
    err = SessionExited("gone", instance="x-1", adapter="fake", state="busy",
                        screen_tail=["a", "b"])
    again = decode_error(encode_error(err))
    assert type(again) is SessionExited and str(again) == str(err) and again.detail == "gone"
    assert again.to_dict() == err.to_dict()
    spawn = decode_error(encode_error(SpawnError(["nope"], "No such file")))
    assert isinstance(spawn, SpawnError) and "No such file" in str(spawn)
    # Only aimterm's and the builtin classes are rebuilt; anything else is named, not loaded.
    odd = decode_error(("os", "system", "boom", {}))
    assert type(odd) is RuntimeError and "boom" in str(odd)


# -- a fleet on hosts -------------------------------------------------------------------------


def _check_order(events: list[Event]) -> dict[str, list[Event]]:
    """Each instance's events, checked: its states chain edge to edge through the table,
    and every turn_started is followed by its own turn_finished before the next one."""
    per: dict[str, list[Event]] = collections.defaultdict(list)
    for event in events:
        per[event.instance].append(event)
    for iid, seq in per.items():
        state = State.EXITED
        open_turn: int | None = None
        for event in seq:
            if isinstance(event, StateChanged):
                assert event.old is state, f"{iid}: {event.old} after {state}: {seq}"
                assert event.new in TRANSITIONS[state], f"{iid}: {state} -> {event.new}"
                state = event.new
            elif isinstance(event, TurnStarted):
                assert open_turn is None, f"{iid}: turn {event.turn} inside {open_turn}"
                open_turn = event.turn
            elif isinstance(event, TurnFinished):
                assert open_turn == event.turn, f"{iid}: turn {event.turn} ends {open_turn}"
                open_turn = None
    return per


def test_a_loaded_fleet_on_two_hosts_keeps_order_and_every_reply() -> None:
    pool = Pool([GroupSpec(fake_adapter(ECHO, "echo"), count=6)], hosts=2)
    events: list[Event] = []
    pool.bus.subscribe(events.append)
    try:
        pool.start(timeout=30)
        hosts = {r["host"] for r in pool.status()}
        assert hosts == {0, 1}, pool.status()
        prompts = [f"p{i:04d}" for i in range(600)]
        futures = [pool.submit(p) for p in prompts]
        replies = [f.result(60).reply for f in futures]
        assert replies == [f"echo: {p}" for p in prompts]
        per = _check_order(events)
        started = [e for e in events if isinstance(e, TurnStarted)]
        assert sorted(e.prompt for e in started) == sorted(prompts)  # none lost, none twice
        assert sum(r["turns"] for r in pool.status()) == len(prompts)
        assert len(per) == 6
    finally:
        pool.shutdown(timeout=10)
    assert pool.hosts is not None and pool.hosts.pids() == []


def test_tools_killed_under_load_lose_no_prompt() -> None:
    echo = GroupSpec(fake_adapter(ECHO, "echo"), count=4, env={"FAKE_THINK": "0.002"})
    pool = Pool([echo], hosts=2, retry_turns=5,
                restart=RestartPolicy(backoff_s=0.05, max_fast_failures=50))
    events: list[Event] = []
    pool.bus.subscribe(events.append)
    try:
        pool.start(timeout=30)
        prompts = [f"k{i:03d}" for i in range(900)]
        futures = [pool.submit(p, timeout=30) for p in prompts]
        killed = 0
        for _ in range(6):
            time.sleep(0.05)
            victim = next((s for s in pool.status() if s["prompt"] and s["pid"]), None)
            if victim is not None:
                os.kill(victim["pid"], signal.SIGKILL)
                killed += 1
        replies = [f.result(90).reply for f in futures]
        assert replies == [f"echo: {p}" for p in prompts]
        assert killed
        _check_order(events)
        assert any(isinstance(e, ProcessExited) for e in events)
    finally:
        pool.shutdown(timeout=10)


def test_a_host_killed_mid_turn_comes_back_and_its_prompts_are_retried() -> None:
    spin = GroupSpec(fake_adapter(SPINNER, "spin"), count=2, env={"FAKE_THINK": "0.3"})
    pool = Pool([spin], hosts=2, retry_turns=2, restart=RestartPolicy(backoff_s=0.05))
    events: list[Event] = []
    pool.bus.subscribe(events.append)
    try:
        pool.start(timeout=30)
        assert pool.hosts is not None
        first = pool.hosts.links[0]
        host_pid = first.pid
        on_it = [r for r in pool.status() if r["host"] == 0]
        assert on_it
        tool_pids = [r["pid"] for r in on_it]
        futures = [pool.submit(f"job {i}") for i in range(4)]
        wait_for(lambda: any(r["state"] == "busy" for r in pool.status() if r["host"] == 0),
                 "a busy instance on host 0")
        os.kill(host_pid or 0, signal.SIGKILL)
        turns = [f.result(60) for f in futures]
        assert all(t.ok for t in turns), turns
        assert sorted(t.prompt for t in turns) == [f"job {i}" for i in range(4)]
        # The tools the dead host left behind are gone; a new host took its instances.
        wait_for(lambda: not any(pid_alive(p) for p in tool_pids), "the orphans killed")
        assert first.pid != host_pid and first.alive()
        assert any(isinstance(e, TurnRetried) for e in events)
        gone = [e for e in events if isinstance(e, StateChanged) and "session host" in e.reason]
        assert gone and {e.instance for e in gone} <= {r["id"] for r in on_it}
        _check_order(events)
        assert pool.send("after", to=on_it[0]["id"]).ok
    finally:
        pool.shutdown(timeout=10)


def test_questions_answers_screens_and_interrupts_go_through_the_host() -> None:
    confirm = GroupSpec(fake_adapter(CONFIRM, "confirm"), count=1)
    spin = GroupSpec(fake_adapter(SPINNER, "spin"), count=1, env={"FAKE_THINK": "30"})
    pool = Pool([confirm, spin], hosts=2)
    try:
        pool.start(timeout=30)
        safe = pool.send("do safe-thing", tool="confirm")
        assert safe.ok and [a.rule for a in safe.answered] == ["safe"]
        pending = pool.submit("do danger", tool="confirm")
        inst = pool.instance("confirm-1")
        wait_for(lambda: inst.state is State.WAITING, "the question")
        assert "Proceed with danger?" in " ".join(pool.screen("confirm-1"))
        with pytest.raises(NotReady):
            pool.instance("spin-1").session.answer("y")
        pool.answer("confirm-1", ["y", "enter"])
        assert pending.result(20).ok
        long = pool.submit("think", tool="spin")
        # (Esc in the same read as the prompt's Enter would be lost on the tool.)
        wait_for(lambda: any("esc to interrupt" in line for line in pool.screen("spin-1")),
                 "the spinner")
        pool.interrupt("spin-1")
        assert long.result(20).status.value == "interrupted"
        assert pool.instance("spin-1").session.screen_tail(3)
    finally:
        pool.shutdown(timeout=10)


def test_scaling_down_and_up_drops_and_makes_sessions_on_their_hosts() -> None:
    pool = Pool([GroupSpec(fake_adapter(ECHO, "echo"), count=4)], hosts=2)
    try:
        pool.start(timeout=30)
        assert pool.hosts is not None
        pool.scale("echo", 1)
        wait_for(lambda: len(pool.status()) == 1, "scaled down")
        wait_for(lambda: sum(len(lk.sessions) for lk in pool.hosts.links) == 1,
                 "the hosts forgot the removed instances")
        pool.scale("echo", 3)
        pool.wait_ready(30)
        assert sorted({r["host"] for r in pool.status()}) == [0, 1]
        assert all(pool.send(f"x{i}").ok for i in range(6))
    finally:
        pool.shutdown(timeout=10)


def test_a_controller_that_dies_takes_no_tool_with_it(tmp_path: Any) -> None:
    """SIGKILL the controller: its hosts see the link close and kill their tools."""
    script = tmp_path / "controller.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from aimterm.pool import GroupSpec, Pool
        from tests.helpers import ECHO, fake_adapter
        pool = Pool([GroupSpec(fake_adapter(ECHO, "echo"), count=3)], hosts=2)
        pool.start(timeout=30)
        print(" ".join(str(r["pid"]) for r in pool.status()), flush=True)
        print(" ".join(str(p) for p in pool.hosts.pids()), flush=True)
        time.sleep(60)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        tools = [int(p) for p in proc.stdout.readline().split()]
        hosts = [int(p) for p in proc.stdout.readline().split()]
        assert len(tools) == 3 and len(hosts) == 2 and all(map(pid_alive, tools + hosts))
        proc.kill()
        proc.wait(10)
        wait_for(lambda: not any(map(pid_alive, tools + hosts)), "tools and hosts gone",
                 timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_read_hands_turns_over_in_the_order_a_local_session_does() -> None:
    """One read of the link can hold a whole turn. One that ended well reaches the caller
    after its events are out (a history opens its record on turn_started); one that failed
    is handed over inside its exit's batch, before what listeners do about the exit."""
    loop = IOLoop.shared()
    link = HostLink(0, loop)
    bus = EventBus()
    session = HostedSession(link, fake_adapter(ECHO, "echo"), instance_id="e-1", bus=bus,
                            loop=loop)
    seen: list[str] = []

    def listen(event: Event) -> None:
        seen.append(event.kind if not isinstance(event, StateChanged) else str(event.new))
        if isinstance(event, StateChanged) and event.new is State.EXITED:
            # What the pool does about an exit: an event of its own, after the exit's.
            bus.emit(InstanceRestarting("e-1", delay_s=0.1, attempt=1, reason="test"))

    bus.subscribe(listen)

    def ev(event: Event) -> tuple[Any, ...]:
        return ("ev", encode_event(event), (None, 1, 0, None)
                if isinstance(event, StateChanged) else None)

    def changed(old: State, new: State) -> tuple[Any, ...]:
        return ev(StateChanged("e-1", old=old, new=new))

    loop.run_sync(link._deliver, [changed(State.EXITED, State.STARTING),
                                  changed(State.STARTING, State.IDLE)])
    for outcome in ("done", "failed"):
        seen.clear()
        session.start_turn("x", lambda turn, error: seen.append(
            f"on_done {type(error).__name__ if error else turn.reply}"))
        start = [changed(State.IDLE, State.BUSY), ev(TurnStarted("e-1", turn=1, prompt="x"))]
        if outcome == "done":
            turn = Turn(1, "x", "e-1", "echo", reply="echo: x")
            msgs = [*start, changed(State.BUSY, State.IDLE),
                    ev(TurnFinished("e-1", turn=1, status="done")), ("done", "e-1", turn, None, 1)]
            loop.run_sync(link._deliver, msgs)
            assert seen == ["busy", "turn_started", "idle", "turn_finished", "on_done echo: x"]
        else:
            error = encode_error(SessionExited("gone", instance="e-1"))
            msgs = [*start, changed(State.BUSY, State.EXITED),
                    ev(TurnFinished("e-1", turn=1, status="failed")),
                    ev(ProcessExited("e-1", pid=1, returncode=None, signal=9)),
                    ("done", "e-1", None, error, 1)]
            loop.run_sync(link._deliver, msgs)
            assert seen == ["on_done SessionExited", "busy", "turn_started", "exited",
                            "turn_finished", "process_exited", "instance_restarting"]
    session.close()
