"""The pool and the cluster API with real processes under real PTYs."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from aimterm.cluster import ClusterManager, ToolProcessPool, launch_cluster
from aimterm.errors import SessionExited, ShuttingDown, UnknownInstance
from aimterm.events import (
    Event,
    InstanceGaveUp,
    InstanceRestarting,
    StateChanged,
    TurnFinished,
    TurnRetried,
)
from aimterm.pool import GroupSpec, InstanceSetup, Lifecycle, Pool, RestartPolicy
from aimterm.router import NoSuchTool, QueueFull, QueueTimeout
from aimterm.session import TurnStatus
from aimterm.states import State
from tests.helpers import ECHO, fake_adapter, wait_for

ECHO_SPEC = fake_adapter(ECHO, "echo")
CRASH_SPEC = fake_adapter("""
command: ["{py}", "{fakes}/crash_on_start.py"]
states: [{state: idle, any: ['^ready>$']}]
""", "crashy")


def echo_group(count: int, think: float = 0.0, **kw: object) -> GroupSpec:
    return GroupSpec(ECHO_SPEC, count=count, env={"FAKE_THINK": str(think)}, **kw)  # type: ignore[arg-type]


def collect(pool: Pool) -> list[Event]:
    events: list[Event] = []
    pool.bus.subscribe(events.append)
    return events


def test_round_robin_is_even_and_status_names_everything() -> None:
    with Pool([echo_group(3)]) as pool:
        turns = [pool.send(f"p{i}") for i in range(30)]
        assert all(t.status is TurnStatus.DONE and t.reply == f"echo: p{i}"
                   for i, t in enumerate(turns))
        per = collections.Counter(t.instance for t in turns)
        assert sorted(per.values()) == [10, 10, 10]
        rows = pool.status()
        assert [r["id"] for r in rows] == ["echo-1", "echo-2", "echo-3"]
        for row in rows:
            assert row["adapter"] == "echo" and row["state"] == "idle"
            assert row["turns"] == 10 and row["restarts"] == 0
            assert isinstance(row["pid"], int) and psutil.pid_exists(row["pid"])


def test_parallel_prompts_run_one_turn_per_instance() -> None:
    with Pool([echo_group(4, think=0.4)]) as pool:
        start = time.monotonic()
        futures = [pool.submit(f"q{i}") for i in range(8)]
        turns = [f.result(30) for f in futures]
        wall = time.monotonic() - start
        assert [t.reply for t in turns] == [f"echo: q{i}" for i in range(8)]
        # 8 prompts of 0.4 s on 4 instances: two rounds, not eight.
        assert wall < 8 * 0.4 * 0.75
        busy_at_once = collections.Counter(t.instance for t in turns)
        assert set(busy_at_once.values()) == {2}


def test_sticky_key_stays_and_moves_when_its_instance_dies() -> None:
    with Pool([echo_group(3)], routing="sticky",
              restart=RestartPolicy(backoff_s=5.0)) as pool:
        first = pool.send("a1", key="conv-a").instance
        assert all(pool.send(f"a{i}", key="conv-a").instance == first for i in range(2, 6))
        other = pool.send("b1", key="conv-b").instance
        assert pool.send("b2", key="conv-b").instance == other
        os.kill(pool.instance(first).session.pid or 0, signal.SIGKILL)
        wait_for(lambda: pool.instance(first).state in (State.BACKOFF, State.EXITED),
                 "the instance to be seen dead")
        moved = pool.send("a6", key="conv-a").instance
        assert moved != first
        assert pool.send("a7", key="conv-a").instance == moved


def test_least_busy_favours_the_fast_instance() -> None:
    thinks = {1: "0.0", 2: "0.6"}

    def setup(iid: str, index: int) -> InstanceSetup:
        return InstanceSetup(env={"FAKE_THINK": thinks[index]})

    with Pool([GroupSpec(ECHO_SPEC, count=2, setup=setup)], routing="least_busy") as pool:
        futures = [pool.submit(f"w{i}") for i in range(12)]
        turns = [f.result(30) for f in futures]
        per = collections.Counter(t.instance for t in turns)
        assert per["echo-1"] >= 9, per
        assert per["echo-2"] <= 3, per


def test_back_pressure_and_queue_timeout() -> None:
    with Pool([echo_group(1, think=1.0)], queue_size=2) as pool:
        running = pool.submit("first")
        wait_for(lambda: pool.queue_length() == 0, "the first prompt to be taken")
        queued = [pool.submit("second"), pool.submit("third")]
        with pytest.raises(QueueFull):
            pool.submit("fourth")
        assert running.result(10).reply == "echo: first"
        assert [f.result(10).reply for f in queued] == ["echo: second", "echo: third"]
    with Pool([echo_group(1, think=1.0)], queue_timeout_s=0.3) as pool:
        running = pool.submit("busy")
        late = pool.submit("late")
        with pytest.raises(QueueTimeout) as info:
            late.result(10)
        assert info.value.code == "queue_timeout"
        assert running.result(10).ok


def test_kill_9_busy_instance_restarts_and_its_prompt_is_retried() -> None:
    with Pool([echo_group(2, think=0.8)]) as pool:
        events = collect(pool)
        futures = [pool.submit(f"job{i}") for i in range(4)]
        wait_for(lambda: all(r["state"] == "busy" for r in pool.status()), "both instances busy")
        victim = pool.instance("echo-1")
        victim_prompt = victim.pending.prompt if victim.pending else None
        crashed_at = time.monotonic()
        os.kill(victim.session.pid or 0, signal.SIGKILL)
        turns = [f.result(30) for f in futures]
        assert sorted(t.reply for t in turns) == sorted(f"echo: job{i}" for i in range(4))
        retried = [e for e in events if isinstance(e, TurnRetried)]
        assert [e.prompt for e in retried] == [victim_prompt]
        # Its turn ended in the event stream too, as failed, with why.
        failed = [e for e in events if isinstance(e, TurnFinished) and e.status == "failed"]
        assert [(e.instance, e.error) for e in failed] == [
            ("echo-1", "process exited (killed by signal 9)")]
        assert any(isinstance(e, InstanceRestarting) and e.instance == "echo-1"
                   for e in events)
        wait_for(lambda: victim.state is State.IDLE, "the restarted instance to be idle", timeout=10)
        idle_again = max(e.mono for e in events if isinstance(e, StateChanged)
                         and e.instance == "echo-1" and e.new == "idle")
        assert idle_again - crashed_at < 2.0 + 1.0  # 2 s budget plus this tool's start time
        assert victim.restarts == 1
        assert pool.status()[0]["restarts"] == 1


def test_prompt_fails_with_error_when_retries_are_used_up() -> None:
    with Pool([echo_group(1, think=5.0)], retry_turns=0,
              restart=RestartPolicy(backoff_s=0.05)) as pool:
        future = pool.submit("doomed")
        wait_for(lambda: pool.status()[0]["state"] == "busy", "busy")
        os.kill(pool.instance("echo-1").session.pid or 0, signal.SIGKILL)
        with pytest.raises(SessionExited):
            future.result(10)


def test_fatal_after_repeated_fast_failures() -> None:
    pool = Pool([GroupSpec(CRASH_SPEC, count=1)],
                restart=RestartPolicy(backoff_s=0.05, max_fast_failures=3))
    events = collect(pool)
    try:
        pool.start(wait=True, timeout=20)
        inst = pool.instance("crashy-1")
        assert inst.state is State.FATAL
        assert inst.fatal_reason and "3 fast failures" in inst.fatal_reason
        gave_up = [e for e in events if isinstance(e, InstanceGaveUp)]
        assert len(gave_up) == 1 and gave_up[0].failures == 3
        assert sum(isinstance(e, InstanceRestarting) for e in events) == 2
        assert pool.status()[0]["state"] == "fatal"
        with pytest.raises(NoSuchTool):
            pool.submit("anyone?")
    finally:
        pool.shutdown()


def test_scale_up_down_and_drain_finishes_its_turn() -> None:
    with Pool([echo_group(2, think=0.5)]) as pool:
        pool.scale("echo", 3)
        pool.wait_ready(20)
        assert [r["state"] for r in pool.status()] == ["idle"] * 3
        future = pool.submit("last words", to="echo-2")
        wait_for(lambda: pool.instance("echo-2").state is State.BUSY, "echo-2 busy")
        drained = pool.drain("echo-2")
        assert pool.instance("echo-2").lifecycle is Lifecycle.DRAINING
        assert future.result(10).reply == "echo: last words"
        drained.result(10)
        assert [r["id"] for r in pool.status()] == ["echo-1", "echo-3"]
        pool.scale("echo", 1)
        wait_for(lambda: len(pool.status()) == 1, "scale down to one")
        assert pool.send("still here").ok
        with pytest.raises(UnknownInstance):
            pool.drain("echo-9")


def test_named_groups_run_one_tool_in_two_folders_and_go_when_removed(tmp_path: Path) -> None:
    """A group with a name of its own (as a plan step's): its ids, its folder, its variables
    under the pool's, its env_digest; removing it drains its instance (the turn in hand
    finishes) and frees the name."""
    from aimterm.instance import env_digest

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with Pool([GroupSpec("bash", count=1, cwd=tmp_path / "a")], env={"MARK": "pool"}) as pool:
        pool.add_group(GroupSpec("bash", count=1, cwd=tmp_path / "b", env={"STEP": "b"},
                                 name="step-b"))
        pool.wait_ready(20)
        rows = {r["id"]: r for r in pool.status()}
        assert set(rows) == {"bash-1", "step-b-1"}
        assert rows["step-b-1"]["group"] == "step-b" and rows["bash-1"]["group"] == "bash"
        assert rows["step-b-1"]["env_digest"] == env_digest({"STEP": "b"}) != \
            rows["bash-1"]["env_digest"]
        assert pool.send("pwd; echo $MARK $STEP", to="step-b-1").reply == \
            f"{tmp_path / 'b'}\npool b"
        with pytest.raises(ValueError, match="already has a group named 'step-b'"):
            pool.add_group(GroupSpec("bash", count=1, name="step-b"))
        busy = pool.submit("sleep 0.5; echo done", to="step-b-1")
        wait_for(lambda: pool.instance("step-b-1").state is State.BUSY, "step-b-1 busy")
        gone = pool.remove_group("step-b")
        assert busy.result(10).reply == "done"
        gone.result(10)
        assert [r["id"] for r in pool.status()] == ["bash-1"]
        with pytest.raises(NoSuchTool):
            pool.remove_group("step-b")
        pool.add_group(GroupSpec("bash", count=1, name="step-b"))  # the name is free again
        wait_for(lambda: len(pool.status()) == 2, "step-b again")
        assert pool.remove_group("step-b").result(10) is None


def test_setup_hook_gives_each_instance_its_own_cwd(tmp_path: Path) -> None:
    def setup(iid: str, index: int) -> InstanceSetup:
        d = tmp_path / iid
        d.mkdir()
        return InstanceSetup(cwd=str(d), env={"MARK": iid})

    bash = GroupSpec("bash", count=2, setup=setup)
    with Pool([bash]) as pool:
        for iid in ("bash-1", "bash-2"):
            assert pool.send("pwd; echo $MARK", to=iid).reply == f"{tmp_path / iid}\n{iid}"


def test_shutdown_leaves_no_process_and_fails_queued_prompts() -> None:
    pool = Pool([echo_group(2, think=2.0)])
    pool.start()
    pids = [r["pid"] for r in pool.status()]
    running = [pool.submit(f"r{i}") for i in range(2)]
    queued = pool.submit("never runs")
    wait_for(lambda: all(r["state"] == "busy" for r in pool.status()), "both busy")
    start = time.monotonic()
    pool.shutdown(timeout=4)
    assert time.monotonic() - start < 4 + 3
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(ShuttingDown):
        queued.result(1)
    for future in running:
        assert future.done() and future.exception() is not None
    with pytest.raises(ShuttingDown):
        pool.submit("after")


def test_cluster_manager_api(tmp_path: Path) -> None:
    with launch_cluster(ECHO_SPEC, count=2, routing="least_busy") as cluster:
        assert [t.reply for t in cluster.map(["m1", "m2", "m3"])] == \
            ["echo: m1", "echo: m2", "echo: m3"]
        assert cluster.send("s").reply == "echo: s"
        assert cluster.send_to("echo-2", "direct").instance == "echo-2"
        submitted = {cluster.submit(f"x{i}").result(10).reply for i in range(3)}
        got = {cluster.read_any(10).reply for _ in range(3)}
        assert got == submitted
        with pytest.raises(TimeoutError):
            cluster.read_any(0.2)

        async def run() -> list[str]:
            one = await cluster.asend("async")
            many = await cluster.amap(["a1", "a2"])
            return [one.reply] + [t.reply for t in many]

        assert asyncio.run(run()) == ["echo: async", "echo: a1", "echo: a2"]
        rows = cluster.get_status()
        assert {"id", "adapter", "state", "pid", "turns", "restarts"} <= set(rows[0])


def test_tool_process_pool_request_ids() -> None:
    with ToolProcessPool(ECHO_SPEC, count=2) as tpp:
        ids = [tpp.send_prompt(f"t{i}") for i in range(3)]
        assert tpp.read_response(ids[1], timeout=10).reply == "echo: t1"
        rest = {tpp.read_response(timeout=10).reply for _ in range(2)}
        assert rest == {"echo: t0", "echo: t2"}
        health = tpp.check_health()
        assert health["healthy"] and health["instances"] == 2 and health["ready"] == 2
        old_pid = tpp.get_status()[0]["pid"]
        assert tpp.restart_instance("echo-1") is State.IDLE
        assert tpp.get_status()[0]["pid"] != old_pid
        assert tpp.read_response(tpp.send_prompt("after", instance_id="echo-1"),
                                 timeout=10).instance == "echo-1"


def test_cluster_of_several_tools_filters_by_tool() -> None:
    with ClusterManager({"python": 1, "bash": 1}) as cluster:
        assert cluster.send("print(40+2)", tool="python").reply == "42"
        assert cluster.send("echo $((40+2))", tool="bash").reply == "42"
        with pytest.raises(NoSuchTool):
            cluster.send("x", tool="nope")


def _argv(inst: object) -> list[str]:
    return psutil.Process(inst.session.pid).cmdline()  # type: ignore[attr-defined]


def test_resume_once_for_named_instances_and_always_for_a_resume_group() -> None:
    # resume=[ids]: how a daemon relaunches the fleet of one that died: those instances
    # continue their conversations once; a later restart starts fresh.
    with Pool([echo_group(2)], resume=["echo-2"],
              restart=RestartPolicy(backoff_s=0.05)) as pool:
        first, second = pool.instance("echo-1"), pool.instance("echo-2")
        assert not first.resumed and "--resume" not in _argv(first)
        assert second.resumed and "--resume" in _argv(second)
        assert [r["resumed"] for r in pool.status()] == [False, True]
        assert pool.send("hi", to="echo-2").reply == "echo: hi"
        os.kill(second.session.pid or 0, signal.SIGKILL)
        wait_for(lambda: second.restarts == 1 and second.state is State.IDLE, "the restart")
        assert not second.resumed and "--resume" not in _argv(second)
    # GroupSpec(resume=True): every start resumes, the pool's restarts included.
    with Pool([echo_group(1, resume=True)], restart=RestartPolicy(backoff_s=0.05)) as pool:
        inst = pool.instance("echo-1")
        assert inst.resumed and "--resume" in _argv(inst)
        os.kill(inst.session.pid or 0, signal.SIGKILL)
        wait_for(lambda: inst.restarts == 1 and inst.state is State.IDLE, "the restart")
        assert inst.resumed and "--resume" in _argv(inst)
        assert pool.send("again").reply == "echo: again"


def test_a_resume_that_fails_is_retried_fresh() -> None:
    group = GroupSpec(ECHO_SPEC, count=1, env={"FAKE_RESUME_FAIL": "1"}, resume=True)
    pool = Pool([group], restart=RestartPolicy(backoff_s=0.05))
    events = collect(pool)
    try:
        pool.start(wait=True, timeout=20)
        inst = pool.instance("echo-1")
        assert inst.state is State.IDLE
        assert not inst.resumed and "--resume" not in _argv(inst)
        [restarting] = [e for e in events if isinstance(e, InstanceRestarting)]
        assert "resumed start failed: starting fresh" in restarting.reason
        assert pool.send("works").reply == "echo: works"
    finally:
        pool.shutdown()
