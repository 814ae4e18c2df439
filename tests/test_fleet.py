"""One suite, two fleets: every test runs against the in-process fleet (ClusterManager) and
against a daemon's fleet through its socket (RemoteFleet), with the same assertions.

The fleets are real: scripted fake CLIs under PTYs (an echo REPL, a tool that asks before it
acts, a spinner that takes its time); the daemon is a real one on a short temporary state dir,
in this process so that the leak check sees its instances.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aimterm.cluster import ClusterManager
from aimterm.config import resolve_config
from aimterm.daemon import Daemon
from aimterm.errors import AdapterNotFound, NotReady, ProtocolError, UnknownInstance
from aimterm.fleet import STATUS_FIELDS, Fleet, TurnRecord
from aimterm.ipc.fleet import RemoteFleet
from aimterm.pool import GroupSpec, RestartPolicy
from aimterm.router import NoSuchTool
from aimterm.session import Turn, TurnStatus
from aimterm.states import State
from tests.helpers import CONFIRM, ECHO, FAKES, SPINNER, wait_for

ADAPTERS = {"echo": ECHO, "confirm": CONFIRM, "spinner": SPINNER}
#: A spinner turn that only ends early if interrupted.
SLOW = {"FAKE_THINK": "20"}

MakeFleet = Callable[..., Fleet]


@pytest.fixture(params=["local", "local-hosts", "remote"])
def make_fleet(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
               ) -> Iterator[MakeFleet]:
    """``make_fleet(echo=2, confirm=1, ...)``: a started fleet of those tools, all ready:
    in this process (its sessions here, or in two session hosts), or a daemon's (whose
    cluster file leaves hosts at auto)."""
    root = Path(tempfile.mkdtemp(prefix="atf-", dir="/tmp"))  # a socket path is short
    adapters = root / "adapters"
    adapters.mkdir()
    for name, text in ADAPTERS.items():
        (adapters / f"{name}.yaml").write_text(
            text.replace("{fakes}", str(FAKES)).replace("{py}", sys.executable))
    monkeypatch.setenv("AIMTERM_ADAPTER_PATH", str(adapters))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(root / "config"))
    stops: list[Callable[[], None]] = []

    def make(env: dict[str, str] | None = None, **counts: int) -> Fleet:
        env = env or {}
        if request.param.startswith("local"):
            groups = [GroupSpec(name, count=n, env=env) for name, n in counts.items()]
            cluster = ClusterManager(groups, restart=RestartPolicy(backoff_s=0.1),
                                     hosts=2 if request.param == "local-hosts" else 0)
            stops.append(cluster.shutdown)
            return cluster.start(timeout=20)
        env_yaml = "{" + ", ".join(f"{k}: '{v}'" for k, v in env.items()) + "}"
        lines = [f"state_dir: {root / 'state'}", "restart: {backoff_s: 0.1}", "instances:"]
        for name, n in counts.items():
            lines += [f"  - adapter: {name}", f"    count: {n}", f"    env: {env_yaml}"]
        config = root / "cluster.yaml"
        config.write_text("\n".join(lines) + "\n")
        daemon = Daemon(resolve_config(str(config), None))
        daemon.start()
        stops.append(daemon.stop)
        remote = RemoteFleet(daemon.config.socket_path)
        stops.insert(0, remote.close)  # the client goes before its daemon
        wait_for(lambda: all(r["state"] == "idle" for r in remote.status()),
                 "the daemon's fleet to be ready", timeout=20)
        return remote

    try:
        yield make
    finally:
        for stop in stops:
            stop()
        shutil.rmtree(root, ignore_errors=True)


def state_of(fleet: Fleet, iid: str) -> str:
    return next(str(r["state"]) for r in fleet.status() if r["id"] == iid)


def kinds_of(events: Iterator[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events]


# -- prompts -----------------------------------------------------------------------------------

def test_submit_send_and_map_return_turns(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(echo=2)
    turn = fleet.send("hi")
    assert isinstance(turn, Turn)
    assert (turn.reply, turn.status, turn.prompt) == ("echo: hi", TurnStatus.DONE, "hi")
    assert turn.instance in ("echo-1", "echo-2") and turn.adapter == "echo"
    assert turn.total_ms is not None and turn.total_ms >= 0
    assert fleet.send("there", to="echo-2").instance == "echo-2"
    future = fleet.submit("later", tool="echo")
    assert isinstance(future, concurrent.futures.Future)
    assert future.result(10).reply == "echo: later"
    turns = fleet.map([f"p{i}" for i in range(5)])
    assert [t.reply for t in turns] == [f"echo: p{i}" for i in range(5)]
    assert {t.instance for t in turns} == {"echo-1", "echo-2"}  # in parallel, on both


def test_errors_are_the_same_classes(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(echo=1)
    with pytest.raises(NoSuchTool):
        fleet.send("x", tool="nope")
    for call in (lambda: fleet.answer("ghost", "y"), lambda: fleet.interrupt("ghost"),
                 lambda: fleet.screen("ghost"), lambda: fleet.restart("ghost"),
                 lambda: fleet.drain("ghost").result(5), lambda: fleet.turns("ghost")):
        with pytest.raises(UnknownInstance) as info:
            call()
        assert info.value.instance == "ghost"
    with pytest.raises(NotReady):
        fleet.answer("echo-1", "y")  # nothing asked
    with pytest.raises(NotReady):
        fleet.interrupt("echo-1")  # nothing to interrupt
    assert fleet.send("still fine").reply == "echo: still fine"


# -- control -----------------------------------------------------------------------------------

def test_answer_a_question_no_rule_answers(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(confirm=1)
    future = fleet.submit("do risky")
    wait_for(lambda: state_of(fleet, "confirm-1") == "waiting", "the question")
    [row] = fleet.status()
    assert row["question"] == "Proceed with risky? (y/n)"
    assert not future.done()  # a question does not end the turn
    fleet.answer("confirm-1", ["y", "enter"])
    turn = future.result(10)
    assert turn.status is TurnStatus.DONE and turn.reply.endswith("did risky")
    assert [a.rule for a in turn.answered] == ["caller"]
    events = list(fleet.events(kinds=["question_pending", "question_answered"]))
    assert [(e["kind"], e["instance"]) for e in events] == [
        ("question_pending", "confirm-1"), ("question_answered", "confirm-1")]
    assert events[1]["rule"] == "caller" and events[1]["question"] == row["question"]


def test_interrupt_ends_the_turn_interrupted(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(env=SLOW, spinner=1)
    future = fleet.submit("long job")
    # (Esc in the same read as the prompt's Enter would be lost on the tool: wait for it to
    # draw its spinner.)
    wait_for(lambda: any("esc to interrupt" in line for line in fleet.screen("spinner-1")),
             "the spinner")
    began = time.monotonic()
    fleet.interrupt("spinner-1")
    turn = future.result(10)
    assert turn.status is TurnStatus.INTERRUPTED
    assert time.monotonic() - began < 5  # not the 20 s the tool would have taken
    assert "interrupted" in fleet.screen("spinner-1")
    [finished] = list(fleet.events(kinds=["turn_finished"]))
    assert finished["status"] == "interrupted"


def test_drain_removes_the_instance_and_keeps_its_history(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(echo=2)
    assert fleet.send("before", to="echo-2").reply == "echo: before"
    done = fleet.drain("echo-2")
    assert done.result(10) is None
    assert [r["id"] for r in fleet.status()] == ["echo-1"]
    removed = list(fleet.events(kinds=["instance_removed"], instance_id="echo-2"))
    assert [(e["instance"], e["reason"]) for e in removed] == [("echo-2", "drained")]
    assert [t.prompt for t in fleet.turns("echo-2")] == ["before"]  # gone, not forgotten
    assert fleet.send("after").instance == "echo-1"


def test_scale_up_and_down(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(echo=1)
    fleet.scale("echo", 3)
    wait_for(lambda: [(r["id"], r["state"]) for r in fleet.status()] == [
        ("echo-1", "idle"), ("echo-2", "idle"), ("echo-3", "idle")], "three idle instances")
    assert {t.instance for t in fleet.map([f"s{i}" for i in range(6)])} == {
        "echo-1", "echo-2", "echo-3"}
    fleet.scale("echo", 1)
    wait_for(lambda: len(fleet.status()) == 1, "the fleet to shrink")
    scaled = list(fleet.events(kinds=["scaled"]))
    assert [(e["tool"], e["count"]) for e in scaled] == [("echo", 3), ("echo", 1)]
    assert len(list(fleet.events(kinds=["instance_removed"]))) == 2
    with pytest.raises(AdapterNotFound):  # a tool not running yet is a new group, if it exists
        fleet.scale("no-such-adapter", 1)


def test_restart_starts_a_new_process(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(echo=1)
    [before] = fleet.status()
    assert fleet.restart("echo-1") is State.IDLE
    [after] = fleet.status()
    assert after["pid"] != before["pid"] and after["state"] == "idle"
    assert fleet.send("again").reply == "echo: again"
    changes = [(e["old"], e["new"]) for e in fleet.events(kinds=["state_changed"],
                                                          instance_id="echo-1")]
    assert changes.count(("starting", "idle")) == 2


# -- views -------------------------------------------------------------------------------------

def test_status_has_the_same_fields(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(echo=1, confirm=1)
    rows = fleet.status()
    assert [tuple(r) for r in rows] == [STATUS_FIELDS, STATUS_FIELDS]
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {"echo-1", "confirm-1"}
    echo = by_id["echo-1"]
    assert (echo["adapter"], echo["state"], echo["lifecycle"], echo["turns"]) == (
        "echo", "idle", "active", 0)
    assert isinstance(echo["pid"], int) and echo["tags"] == [] and echo["question"] is None
    fleet.send("x", to="echo-1")
    assert next(r for r in fleet.status() if r["id"] == "echo-1")["turns"] == 1


def test_screen_is_the_terminal_as_text(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(echo=1)
    fleet.send("hello")

    def shown() -> list[str]:
        return [line.rstrip() for line in fleet.screen("echo-1") if line.strip()]

    wait_for(lambda: shown()[-1:] == ["ready>"], "the prompt on the screen")
    assert shown()[-3:] == ["ready> hello", "echo: hello", "ready>"]


def test_turns_newest_first_per_instance_and_bounded(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(echo=2)
    for prompt, to in (("a", "echo-1"), ("b", "echo-2"), ("c", "echo-1")):
        fleet.send(prompt, to=to)
    turns = fleet.turns()
    assert all(isinstance(t, TurnRecord) for t in turns)
    assert [(t.prompt, t.instance, t.status, t.reply) for t in turns] == [
        ("c", "echo-1", "done", "echo: c"), ("b", "echo-2", "done", "echo: b"),
        ("a", "echo-1", "done", "echo: a")]
    assert [t.id for t in turns] == sorted((t.id for t in turns), reverse=True)
    assert all(t.finished is not None and t.started <= t.finished for t in turns)
    assert [t.prompt for t in fleet.turns("echo-1")] == ["c", "a"]
    assert [t.prompt for t in fleet.turns(limit=1)] == ["c"]
    for bad in (0, -1, 10**6):
        with pytest.raises(ProtocolError):
            fleet.turns(limit=bad)


def test_events_filtered_by_kind_instance_and_seq_then_followed(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(echo=2)
    fleet.send("one", to="echo-1")
    fleet.send("two", to="echo-2")
    finished = list(fleet.events(kinds=["turn_finished"]))
    assert [(e["instance"], e["status"]) for e in finished] == [("echo-1", "done"),
                                                                ("echo-2", "done")]
    # The same fields on both sides: the class's, the turn's id, and the log's seq and time.
    assert set(finished[0]) == {"kind", "instance", "ts", "seq", "turn", "status", "error",
                                "submit_to_busy_ms", "busy_to_idle_ms", "turn_id"}
    mine = list(fleet.events(instance_id="echo-2"))
    assert mine and {e["instance"] for e in mine} == {"echo-2"}
    assert {"instance_added", "state_changed", "turn_started", "turn_finished"} <= {
        e["kind"] for e in mine}
    assert [e["seq"] for e in mine] == sorted(e["seq"] for e in mine)
    started = list(fleet.events(kinds=["turn_started"], instance_id="echo-2"))
    assert [e["prompt"] for e in started] == ["two"]
    assert started[0]["turn_id"] == finished[1]["turn_id"]
    assert list(fleet.events(kinds=["turn_finished"], since=finished[-1]["seq"])) == []
    assert [e["seq"] for e in fleet.events(kinds=["turn_finished"],
                                           since=finished[0]["seq"])] == [finished[1]["seq"]]
    with pytest.raises(ProtocolError, match="unknown event kind 'nope'"):
        list(fleet.events(kinds=["nope"]))
    with pytest.raises(UnknownInstance):
        list(fleet.events(instance_id="ghost"))

    # Live: the history first, then what happens next, as it happens.
    live = fleet.events(kinds=["turn_finished"], since=finished[-1]["seq"], follow=True)
    future = fleet.submit("three", to="echo-1")
    event = next(live)
    assert (event["kind"], event["instance"]) == ("turn_finished", "echo-1")
    assert future.result(10).reply == "echo: three"
    live.close()
    assert fleet.send("four").reply == "echo: four"  # a closed follower leaves no trace


# -- the in-process history, on its own ----------------------------------------------------------

def test_the_in_process_history_is_bounded_and_numbered_like_the_store(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from aimterm import cluster
    from aimterm.events import TurnFinished, TurnStarted

    monkeypatch.setattr(cluster, "EVENTS_KEPT", 5)
    monkeypatch.setattr(cluster, "TURNS_KEPT", 2)
    history = cluster._History()
    for n in range(1, 5):  # 8 events, 4 turns
        history.on_event(TurnStarted("echo-1", turn=n, prompt=f"p{n}"))
        history.on_event(TurnFinished("echo-1", turn=n, status="done"))
    seqs = [e["seq"] for e in history.events((), None, 0, False)]
    assert seqs == [4, 5, 6, 7, 8]  # the last five, numbered from the first event
    assert [e["seq"] for e in history.events((), None, 6, False)] == [7, 8]
    assert list(history.events((), None, 8, False)) == []
    started = history.events(["turn_started"], None, 0, False)
    assert [(e["turn"], e["turn_id"]) for e in started] == [(3, 3), (4, 4)]
    assert [(t.id, t.prompt, t.status) for t in history.turns(None, 10)] == [
        (4, "p4", "done"), (3, "p3", "done")]
    assert history.turns("echo-2", 10) == []


def test_remote_fleet_finds_the_cluster_where_cluster_up_puts_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a path, RemoteFleet connects where `aimterm cluster up` listens (the default
    cluster, or the cluster of a state dir), not to a bare server's runtime-dir socket."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert RemoteFleet.socket_of() == resolve_config(None, None).socket_path
    assert RemoteFleet.socket_of(tmp_path / "s") == \
        resolve_config(None, str(tmp_path / "s")).socket_path
