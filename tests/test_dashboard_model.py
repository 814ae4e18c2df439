"""The dashboard's fleet view (aimterm.dashboard.model): pure, fed status rows and events."""

from __future__ import annotations

from typing import Any

import pytest

from aimterm.dashboard.model import (
    GROUP_OF_STATE,
    STATE_COLOUR,
    EventFilter,
    FleetView,
    Group,
    event_colour,
    event_summary,
    format_duration,
)
from aimterm.states import State


def row(iid: str, state: str = "idle", adapter: str = "demo", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"id": iid, "adapter": adapter, "state": state, "pid": 1,
                            "turns": 0, "restarts": 0, "lifecycle": "active", "tags": [],
                            "cwd": None, "fatal_reason": None, "question": None,
                            "resumed": False}
    data.update(extra)
    return data


def status(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"daemon": {"pid": 1}, "instances": list(rows), "queued": 0, "ready": True}


def ev(seq: int, kind: str, instance: str | None = None, ts: float = 1000.0,
       **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "kind": kind, "instance": instance, "ts": ts, **fields}


def test_every_state_has_a_group_and_a_colour() -> None:
    assert set(GROUP_OF_STATE) == set(State)
    assert set(STATE_COLOUR) == set(State)
    assert STATE_COLOUR[State.IDLE] == "green"
    assert STATE_COLOUR[State.BUSY] == "yellow"
    assert STATE_COLOUR[State.WAITING] == "magenta"
    assert STATE_COLOUR[State.FATAL] == "red"
    assert STATE_COLOUR[State.ATTACHED] == "blue"


def test_groups_put_attention_first() -> None:
    view = FleetView.build(status(row("a-1", "idle"), row("a-2", "busy"), row("b-1", "fatal"),
                                  row("b-2", "waiting", question="go? (y/n)"),
                                  row("c-1", "attached"), row("c-2", "backoff")))
    groups = [(g, [v.id for v in members]) for g, members in view.grouped()]
    assert groups == [(Group.NEEDS_ANSWER, ["b-2"]), (Group.FAILED, ["b-1", "c-2"]),
                      (Group.WORKING, ["a-2", "c-1"]), (Group.IDLE, ["a-1"])]
    assert view.instances["b-2"].question == "go? (y/n)"
    assert view.counts()[Group.FAILED] == 2


def test_events_move_instances_between_groups() -> None:
    view = FleetView.build(status(row("a-1"), row("a-2")))
    view.apply(ev(10, "state_changed", "a-1", old="idle", new="busy"))
    view.apply(ev(11, "turn_started", "a-1", ts=1000.0, turn=1, prompt="hi"))
    assert view.instances["a-1"].group is Group.WORKING
    assert view.instances["a-1"].turn_time(1075.0) == "1m15s"
    view.apply(ev(12, "state_changed", "a-1", old="busy", new="waiting"))
    view.apply(ev(13, "question_pending", "a-1", question="Apply? (y)es/(n)o", rule="ask"))
    view.apply(ev(14, "turn_finished", "a-1", turn=1, status="waiting"))
    inst = view.instances["a-1"]
    assert inst.group is Group.NEEDS_ANSWER
    assert inst.question == "Apply? (y)es/(n)o"
    assert inst.turn_time(1010.0) == "10s"  # a turn stopped on a question goes on
    view.apply(ev(15, "question_answered", "a-1", rule="caller", question="Apply?", keys="'y'"))
    view.apply(ev(16, "state_changed", "a-1", old="waiting", new="busy"))
    view.apply(ev(17, "state_changed", "a-1", old="busy", new="idle"))
    view.apply(ev(18, "turn_finished", "a-1", turn=1, status="done"))
    assert inst.group is Group.IDLE and inst.question is None
    assert inst.turn_time(2000.0) == "-"


def test_instances_come_and_go_and_restarts_count() -> None:
    view = FleetView.build(status(row("a-1")))
    view.apply(ev(1, "instance_added", "b-1", adapter="codex"))
    view.apply(ev(2, "state_changed", "b-1", old="exited", new="starting"))
    assert view.instances["b-1"].tool == "codex"
    assert view.instances["b-1"].group is Group.WORKING
    view.apply(ev(3, "state_changed", "a-1", old="idle", new="exited"))
    view.apply(ev(4, "instance_restarting", "a-1", delay_s=0.1, attempt=2, reason="exit 1"))
    view.apply(ev(5, "state_changed", "a-1", old="exited", new="backoff"))
    assert view.instances["a-1"].restarts == 2
    assert view.instances["a-1"].group is Group.FAILED
    view.apply(ev(6, "instance_removed", "a-1", adapter="demo", reason="drained"))
    assert list(view.instances) == ["b-1"]
    assert view.tools() == ["codex"]


def test_status_is_newer_than_the_history() -> None:
    history = [ev(1, "instance_added", "a-1", adapter="demo"),
               ev(2, "state_changed", "a-1", old="exited", new="starting"),
               ev(3, "state_changed", "a-1", old="starting", new="idle"),
               ev(4, "state_changed", "a-1", old="idle", new="busy"),
               ev(5, "turn_started", "a-1", ts=500.0, turn=1, prompt="x"),
               ev(6, "instance_added", "gone-1", adapter="demo")]
    view = FleetView.build(status(row("a-1", "busy", cwd="/src", restarts=1, turns=1)), history)
    assert list(view.instances) == ["a-1"]  # the status does not list gone-1
    inst = view.instances["a-1"]
    assert (inst.state, inst.cwd, inst.restarts, inst.turn_started) == (
        State.BUSY, "/src", 1, 500.0)
    assert view.last_seq == 6 and len(view.events) == 6


def test_a_status_row_gives_the_turn_start_without_history() -> None:
    """A daemon's row says when its turn started: no turn_started event needs reading (the
    history is only the newest events, and may begin after it)."""
    view = FleetView.build(status(row("a-1", "busy", turn_started_at=700.5),
                                  row("a-2", "idle", turn_started_at=None)))
    assert view.instances["a-1"].turn_started == 700.5
    assert view.instances["a-2"].turn_started is None
    assert view.instances["a-1"].turn_time(now=730.5) == "30s"


def test_an_event_seen_twice_is_taken_once() -> None:
    view = FleetView.build(status(row("a-1")))
    assert view.apply(ev(7, "state_changed", "a-1", old="idle", new="busy"))
    assert not view.apply(ev(7, "state_changed", "a-1", old="idle", new="busy"))
    assert not view.apply(ev(5, "state_changed", "a-1", old="busy", new="idle"))
    assert view.instances["a-1"].state is State.BUSY and len(view.events) == 1


def test_the_event_list_is_bounded() -> None:
    view = FleetView(max_events=3)
    for seq in range(1, 11):
        view.apply(ev(seq, "scaled", None, tool="demo", count=seq))
    assert [e["seq"] for e in view.events] == [8, 9, 10]


def test_an_unknown_state_shows_as_failed() -> None:
    view = FleetView.build(status(row("a-1", "hibernating")))
    assert view.instances["a-1"].group is Group.FAILED


# -- filters --------------------------------------------------------------------------------------

def test_filter_parsing() -> None:
    flt = EventFilter.parse("instance:demo-1 tool=demo run:R1 kind:turn_started,turn_finished")
    assert flt == EventFilter(instance="demo-1", tool="demo", run="R1",
                              kinds=frozenset({"turn_started", "turn_finished"}))
    assert EventFilter.parse(flt.describe()) == flt
    assert EventFilter.parse("demo-2").instance == "demo-2"
    assert not EventFilter.parse("  ")
    with pytest.raises(ValueError, match="unknown filter field 'colour'"):
        EventFilter.parse("colour:red")
    with pytest.raises(ValueError, match="needs a value"):
        EventFilter.parse("kind:")


def test_filter_by_instance_tool_run_and_kind() -> None:
    view = FleetView.build(status(row("d-1", adapter="demo"), row("c-1", adapter="codex")))
    events = [ev(1, "state_changed", "d-1", old="idle", new="busy"),
              ev(2, "turn_started", "c-1", turn=1, prompt="x"),
              ev(3, "run_started", None, run_id="R1", jobs=2, source=None),
              ev(4, "task_started", "c-1", task_id="t", tool_id="codex", run_id="R1",
                 attempt=1, mode="pooled"),
              ev(5, "task_started", None, task_id="u", tool_id="demo", run_id="R2",
                 attempt=1, mode="oneshot")]
    for e in events:
        view.apply(e)

    def seqs(text: str) -> list[int]:
        return [e["seq"] for e in view.filtered(EventFilter.parse(text))]

    assert seqs("") == [1, 2, 3, 4, 5]
    assert seqs("instance:c-1") == [2, 4]
    assert seqs("tool:codex") == [2, 4]
    assert seqs("tool:demo") == [1, 5]  # by the instance's adapter, or the task's tool
    assert seqs("run:R1") == [3, 4]
    assert seqs("kind:task_started") == [4, 5]
    assert seqs("run:R1 kind:task_started") == [4]


# -- one event as a line --------------------------------------------------------------------------

@pytest.mark.parametrize(("event", "colour"), [
    (ev(1, "state_changed", "a", old="idle", new="busy"), "yellow"),
    (ev(1, "state_changed", "a", old="busy", new="idle"), "green"),
    (ev(1, "state_changed", "a", old="busy", new="waiting"), "magenta"),
    (ev(1, "state_changed", "a", old="busy", new="fatal"), "red"),
    (ev(1, "question_pending", "a", question="?"), "magenta"),
    (ev(1, "turn_finished", "a", status="done"), "green"),
    (ev(1, "turn_finished", "a", status="timeout"), "red"),
    (ev(1, "task_failed", "a", status="failed"), "red"),
    (ev(1, "task_completed", "a"), "green"),
    (ev(1, "run_finished", None, status="succeeded"), "green"),
    (ev(1, "step_changed", None, state="running"), "yellow"),
    (ev(1, "process_exited", "a", pid=1), "red"),
    (ev(1, "daemon_started", None, pid=1), "blue"),
    (ev(1, "some_future_kind", None), "white"),
])
def test_event_colours(event: dict[str, Any], colour: str) -> None:
    assert event_colour(event) == colour


def test_event_summary_is_one_short_line() -> None:
    line = event_summary(ev(3, "turn_started", "demo-1", turn=2, prompt="a\nb" + "x" * 100))
    assert "turn_started" in line and "demo-1" in line and "turn=2" in line
    assert "\n" not in line and "a⏎b" in line and line.endswith("…")
    change = event_summary(ev(4, "state_changed", "demo-1", old="idle", new="busy",
                              reason="turn started"))
    assert "idle → busy  turn started" in change
    assert len(event_summary(ev(5, "scaled", None, tool="t" * 500), width=80)) == 80


def test_durations() -> None:
    assert [format_duration(s) for s in (0, 59.9, 60, 3599, 3600, 7322, -5)] == [
        "0s", "59s", "1m00s", "59m59s", "1h00m", "2h02m", "0s"]


def test_metrics_count_the_whole_history() -> None:
    view = FleetView(max_events=2)  # fewer kept than counted
    for seq, (kind, fields) in enumerate([
            ("prompt_queued", {"prompt": "a"}), ("prompt_queued", {"prompt": "b"}),
            ("prompt_queued", {"prompt": "c"}),
            ("turn_finished", {"status": "waiting"}),  # not an end
            ("turn_finished", {"status": "done", "busy_to_idle_ms": 1000.0}),
            ("turn_finished", {"status": "done", "busy_to_idle_ms": 3000.0}),
            ("turn_finished", {"status": "timeout", "busy_to_idle_ms": None}),
            ("prompt_finished", {"status": "done"}), ("prompt_finished", {"status": "done"}),
            ("task_failed", {"retrying": True}), ("task_failed", {"retrying": False}),
            ("task_completed", {}), ("instance_restarting", {"attempt": 1})], start=1):
        view.apply(ev(seq, kind, "a-1", **fields))
    m = view.metrics
    assert m.turns == {"done": 2, "timeout": 1} and m.in_flight == 1
    assert m.summary() == ("turns 2 done, 1 not  ·  mean turn 2.0s  ·  prompts in flight 1  ·  "
                           "jobs 1 ok, 1 failed, 0 running  ·  restarts 1")
    assert FleetView().metrics.summary() == "turns 0 done  ·  prompts in flight 0"


def test_odd_fields_do_not_break_the_view() -> None:
    view = FleetView.build(status(row("a-1", restarts="many", turns=None)))
    assert view.instances["a-1"].restarts == 0
    assert view.apply(ev(1, "turn_started", "a-1", ts="noon", turn="one"))
    assert view.apply(ev(2, "instance_restarting", "a-1", attempt=float("nan")))
    assert view.instances["a-1"].turn_started is None
    assert (view.instances["a-1"].turns, view.instances["a-1"].restarts) == (0, 0)


def test_the_branch_of_an_instances_folder(tmp_path: Any) -> None:
    """Read from git's files (a view does it for every instance): a checkout, a folder deep
    in it, a linked worktree (a plan step's), a detached head, and no repository at all."""
    import subprocess

    from aimterm.dashboard.model import git_branch

    repo = tmp_path / "repo"
    (repo / "src" / "deep").mkdir(parents=True)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, env=env, check=True, timeout=30,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    git("commit", "-q", "--allow-empty", "-m", "start")
    assert git_branch(str(repo)) == "main"
    assert git_branch(str(repo / "src" / "deep")) == "main"
    git("worktree", "add", "-q", "-b", "aimterm/p/a", str(tmp_path / "wt"))
    assert git_branch(str(tmp_path / "wt")) == "aimterm/p/a"
    git("checkout", "-q", "--detach")
    assert git_branch(str(repo)) == git("rev-parse", "HEAD")[:10]
    assert git_branch(str(tmp_path)) is None
    view = FleetView.build(status(row("a-1", cwd=str(tmp_path / "wt"))))
    assert view.instances["a-1"].branch == "aimterm/p/a"


def test_usage_readings_give_cpu_shares_and_memory() -> None:
    from aimterm.dashboard.model import format_bytes

    view = FleetView.build(status(row("a-1", "busy"), row("a-2")))
    view.take_usage({"at": 100.0, "instances": {"a-1": {"cpu_s": 10.0, "rss_bytes": 85 << 20},
                                                "a-2": {"cpu_s": 1.0, "rss_bytes": 1536}}})
    a1, a2 = view.instances["a-1"], view.instances["a-2"]
    assert a1.cpu_percent is None and a1.usage_text() == ("-", "85M")  # one reading: no share
    view.take_usage({"at": 102.0, "instances": {"a-1": {"cpu_s": 11.5, "rss_bytes": 90 << 20}}})
    assert a1.usage_text() == ("75%", "90M")  # 1.5 s of CPU in 2 s
    assert a2.usage_text() == ("-", "-")  # no reading: its process is gone
    view.take_usage({"at": "x", "instances": []})  # a malformed reply changes nothing
    assert a1.usage_text() == ("75%", "90M")
    assert [format_bytes(n) for n in (0, 1023, 1536, 10 << 20, 3 << 30)] == [
        "0B", "1023B", "1.5K", "10M", "3.0G"]



def test_metrics_by_tool_tokens_cost_and_the_turn_rate() -> None:
    from aimterm.dashboard.metrics import RATE_BUCKET_S, percentile

    assert percentile([], 0.5) is None
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert percentile([float(n) for n in range(1, 101)], 0.95) == 95.0
    view = FleetView.build(status(row("a-1", adapter="demo"), row("c-1", adapter="claude")))
    seq = 0
    for iid, ms, ts in [("a-1", 100.0, 1000.0), ("a-1", 300.0, 1005.0), ("c-1", 2000.0, 1012.0),
                        ("a-1", 200.0, 1290.0)]:
        seq += 1
        view.apply(ev(seq, "turn_finished", iid, status="done", busy_to_idle_ms=ms, ts=ts))
    view.apply(ev(seq + 1, "prompt_finished", "c-1", status="done",
                  tokens={"input": 120, "output": 30}, cost_usd=0.0021))
    view.apply(ev(seq + 2, "prompt_finished", "a-1", status="done", tokens=None, cost_usd=None))
    view.apply(ev(seq + 3, "task_started", "a-1", run_id="R", task_id="j1"))
    m = view.metrics
    assert m.by_tool() == [("claude", 1, 2000.0, 2000.0), ("demo", 3, 200.0, 300.0)]
    assert m.tokens == {"input": 120, "output": 30} and round(m.cost_usd, 4) == 0.0021
    assert m.tasks_running == 1
    assert "tokens 150" in m.summary() and "$0.0021" in m.summary()
    bars = m.rate(now=1301.0)
    assert len(bars) * RATE_BUCKET_S == 300
    # The one at 1000 is older than the chart's window; the others in their 10 s buckets.
    assert sum(bars) == 3 and bars[0] == bars[1] == bars[28] == 1
