"""Events reach every listener in causal order: an event emitted while another is being
delivered (a listener reacting to it) goes out after it, to everyone, in the same order."""

from __future__ import annotations

import os
import signal
import threading

from aimterm.events import (
    Event,
    EventBus,
    InstanceRestarting,
    ProcessExited,
    StateChanged,
    TurnFinished,
)
from aimterm.pool import GroupSpec, Pool, RestartPolicy
from aimterm.states import State
from tests.helpers import ECHO, fake_adapter, wait_for

ECHO_SPEC = fake_adapter(ECHO, "echo")


def label(event: Event) -> str:
    if isinstance(event, StateChanged):
        return f"{event.old}->{event.new}"
    return event.kind


def test_nested_emit_is_delivered_after_the_one_in_progress_to_every_listener() -> None:
    bus = EventBus()
    first, second, third = [], [], []

    def reacting(event: Event) -> None:
        first.append(label(event))
        if isinstance(event, StateChanged) and event.new == "exited":
            bus.emit(StateChanged("a", old=State.EXITED, new=State.BACKOFF))
            bus.emit(InstanceRestarting("a", delay_s=0.1, attempt=1, reason="exit code 1"))

    bus.subscribe(reacting)
    bus.subscribe(lambda e: second.append(label(e)))
    bus.subscribe(lambda e: third.append(label(e)))
    bus.emit(StateChanged("a", old=State.IDLE, new=State.EXITED))
    want = ["idle->exited", "exited->backoff", "instance_restarting"]
    assert first == second == third == want


def test_batch_holds_emits_until_the_block_ends_and_a_raising_listener_is_kept() -> None:
    bus = EventBus()
    seen: list[str] = []

    def boom(event: Event) -> None:
        raise RuntimeError("listener bug")

    bus.subscribe(boom)
    bus.subscribe(lambda e: seen.append(label(e)))
    with bus.batch():
        bus.emit(StateChanged("a", old=State.IDLE, new=State.EXITED))
        bus.emit(ProcessExited("a", pid=1, returncode=0))
        assert seen == []  # held
    assert seen == ["idle->exited", "process_exited"]
    bus.emit(ProcessExited("a", pid=1, returncode=0))  # the bus is usable after a batch
    assert seen[-1] == "process_exited"


def test_emits_of_other_threads_are_not_queued_behind_this_one() -> None:
    bus = EventBus()
    seen: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def slow(event: Event) -> None:
        seen.append(label(event))
        if event.instance == "slow":
            inside.set()
            assert release.wait(10)

    bus.subscribe(slow)
    worker = threading.Thread(target=bus.emit, args=(ProcessExited("slow", pid=1,
                                                                   returncode=0),))
    worker.start()
    assert inside.wait(10)
    bus.emit(ProcessExited("fast", pid=2, returncode=0))  # not held by the other thread
    assert seen == ["process_exited", "process_exited"]
    release.set()
    worker.join(10)


def test_a_crash_is_logged_before_the_restart_it_causes() -> None:
    """A listener subscribed after the pool (as the daemon's store is) hears an instance's
    exit, its process_exited and its failed turn before the back-off and the restart."""
    pool = Pool([GroupSpec(ECHO_SPEC, count=1, env={"FAKE_THINK": "5"})],
                restart=RestartPolicy(backoff_s=0.05))
    seen: list[Event] = []
    with pool:
        pool.bus.subscribe(seen.append)
        future = pool.submit("long")
        inst = pool.instance("echo-1")
        wait_for(lambda: inst.state is State.BUSY, "busy")
        os.kill(inst.session.pid or 0, signal.SIGKILL)
        wait_for(lambda: any(isinstance(e, StateChanged) and e.old == "backoff"
                             for e in seen), "the restart")
        future.cancel()
    labels = [label(e) for e in seen if e.instance == "echo-1"]
    crash = labels.index("busy->exited")
    after = labels[crash:]
    assert after[:6] == ["busy->exited", "turn_finished", "process_exited", "turn_retried",
                         "exited->backoff", "instance_restarting"], labels
    assert after[6] == "backoff->starting", labels
    finished = [e for e in seen if isinstance(e, TurnFinished)]
    assert finished[0].status == "failed"
    stamps = [e.ts for e in seen]
    assert stamps == sorted(stamps)  # wall clock follows the order too
