"""The store: round trips, the append-only event log, WAL and schema version, durability
across a SIGKILLed writer, and failing the turns a crash left in flight."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aimterm.errors import StoreError
from aimterm.events import StateChanged, TurnStarted
from aimterm.store import SCHEMA_VERSION, Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "state" / "aimterm.db") as db:
        yield db


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None)


def test_events_round_trip(store: Store) -> None:
    assert store.last_seq() == 0
    assert store.events() == []
    first = store.append_event(StateChanged("i1", old="starting", new="idle", reason="prompt"))
    second = store.append_event(TurnStarted("i2", turn=1, prompt="héllo"))
    third = store.append_event({"kind": "custom", "instance": "i1", "ts": 12.5, "n": [1, 2]})
    assert (first, second, third) == (1, 2, 3)
    assert store.last_seq() == 3

    events = store.events()
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[0]["kind"] == "state_changed" and events[0]["new"] == "idle"
    assert events[0]["instance"] == "i1" and isinstance(events[0]["ts"], float)
    assert events[1]["prompt"] == "héllo"
    assert events[2] == {"kind": "custom", "instance": "i1", "ts": 12.5, "n": [1, 2], "seq": 3}

    assert [e["seq"] for e in store.events(since=1)] == [2, 3]
    assert [e["seq"] for e in store.events(limit=2)] == [1, 2]
    assert [e["seq"] for e in store.events(kinds=["custom", "turn_started"])] == [2, 3]
    assert [e["seq"] for e in store.events(instance="i1")] == [1, 3]
    assert [e["seq"] for e in store.events(since=1, instance="i1", kinds=["custom"])] == [3]


def test_event_needs_a_kind(store: Store) -> None:
    with pytest.raises(ValueError, match="kind"):
        store.append_event({"instance": "i1"})


def test_events_are_append_only(store: Store) -> None:
    store.append_event({"kind": "x", "instance": "i1"})
    conn = _raw(store.path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE events SET kind = 'y'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events")
        assert conn.execute("SELECT kind FROM events").fetchall() == [("x",)]
    finally:
        conn.close()


def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with Store(path) as db:
        assert db.schema_version == SCHEMA_VERSION >= 1
        db.append_event({"kind": "x"})
    # 0600: events hold prompts and replies.
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    conn = _raw(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()
    with Store(path) as db:  # reopening migrates nothing and keeps the data
        assert db.schema_version == SCHEMA_VERSION
        assert db.last_seq() == 1


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    Store(path).close()
    conn = _raw(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer") as info:
        Store(path)
    assert info.value.code == "store_error"


def test_instances(store: Store) -> None:
    store.upsert_instance(id="b", adapter="demo", state="starting", pid=10, cwd="/w",
                          tags=["y", "x"], restarts=0, turns=0, resume=True, extra={"k": 1})
    store.upsert_instance(id="a", adapter="bash", state="idle")
    store.upsert_instance(id="b", state="busy", turns=3)  # only the given fields change
    rows = {r["id"]: r for r in store.instances()}
    assert list(rows) == ["a", "b"]
    b = rows["b"]
    assert (b["adapter"], b["state"], b["pid"], b["cwd"], b["turns"]) == ("demo", "busy", 10, "/w", 3)
    assert b["tags"] == ["x", "y"] and b["extra"] == {"k": 1} and b["resume"] is True
    assert rows["a"]["tags"] == [] and rows["a"]["resume"] is None
    assert isinstance(b["updated"], float)
    with pytest.raises(ValueError, match="unknown instance fields: colour"):
        store.upsert_instance(id="a", colour="red")
    assert store.remove_instance("a") is True
    assert store.remove_instance("a") is False
    assert [r["id"] for r in store.instances()] == ["b"]


def test_turns_and_fail_inflight(store: Store) -> None:
    t1 = store.turn_started("i1", "first")
    t2 = store.turn_started("i2", "second")
    t3 = store.turn_started("i1", "third")
    store.turn_finished(t1, "ok", reply="done")
    assert [t["id"] for t in store.inflight_turns()] == [t2, t3]
    assert store.inflight_turns()[0]["status"] == "running"

    failed = store.fail_inflight("daemon crashed")
    assert [t["id"] for t in failed] == [t2, t3]
    assert all(t["status"] == "failed" and t["error"] == "daemon crashed" and t["finished"]
               for t in failed)
    assert [t["prompt"] for t in failed] == ["second", "third"]
    assert store.inflight_turns() == []
    assert store.fail_inflight("again") == []
    done = store.turn(t1)
    assert done is not None and (done["status"], done["reply"], done["error"]) == ("ok", "done", None)
    assert [t["id"] for t in store.turns(instance="i1")] == [t3, t1]
    with pytest.raises(KeyError):
        store.turn_finished(999, "ok")


def test_threads_share_one_store(store: Store) -> None:
    def work(n: int) -> None:
        for i in range(100):
            store.append_event({"kind": "tick", "instance": f"t{n}", "i": i})
            if i % 25 == 0:
                store.turn_finished(store.turn_started(f"t{n}", str(i)), "ok")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = store.events()
    assert len(events) == 800 and [e["seq"] for e in events] == list(range(1, 801))
    assert [e["i"] for e in store.events(instance="t3")] == list(range(100))
    assert len(store.turns()) == 32 and store.inflight_turns() == []


_WRITER = """
import sys
from aimterm.store import Store
db = Store(sys.argv[1])
for i in range(50):
    db.append_event({"kind": "tick", "instance": "w", "i": i})
db.upsert_instance(id="w", state="busy", pid=1)
db.turn_started("w", "in flight when killed")
print("written", flush=True)
sys.stdin.read()  # hold the store open until killed
"""


def test_writes_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "written"
    finally:
        proc.kill()
        proc.wait(10)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    with Store(path) as db:
        assert [e["i"] for e in db.events()] == list(range(50))
        assert db.instances()[0]["state"] == "busy"
        inflight = db.inflight_turns()
        assert [t["prompt"] for t in inflight] == ["in flight when killed"]
        assert db.fail_inflight("daemon was killed")[0]["status"] == "failed"


def test_a_turn_keeps_its_reply_source_tokens_and_cost(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as db:
        tid = db.turn_started("claude-1", "hi")
        db.turn_finished(tid, "done", reply="hello", reply_source="record",
                         tokens={"input": 12, "output": 3}, cost_usd=0.0021)
        row = db.turn(tid)
        assert row is not None
        assert (row["reply_source"], row["tokens"], row["cost_usd"]) == (
            "record", {"input": 12, "output": 3}, 0.0021)
        plain = db.turn_started("echo-1", "x")
        db.turn_finished(plain, "done", reply="x")
        assert db.turns("echo-1")[0]["tokens"] == {}


def test_a_store_of_the_first_schema_is_migrated_with_its_turns(tmp_path: Path) -> None:
    import sqlite3

    from aimterm.store import _MIGRATIONS

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in _MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("INSERT INTO turns (instance, prompt, status, reply, started) "
                 "VALUES ('echo-1', 'p', 'done', 'r', 1.0)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    path.chmod(0o600)
    with Store(path) as db:
        assert db.schema_version == SCHEMA_VERSION
        (row,) = db.turns()
        assert (row["reply"], row["reply_source"], row["tokens"]) == ("r", None, {})


def test_event_texts_are_the_events_as_sent(store: Store) -> None:
    import json

    store.append_event({"kind": "daemon_started", "ts": 1.0})
    store.append_event({"kind": "turn_finished", "instance": "demo-1", "ts": 2.0,
                        "reply": "héllo\n{\"quoted\": [1]}", "tokens": {"sent": 3}})
    store.append_event({"kind": "state_changed", "instance": "demo-1", "ts": 3.0,
                        "seq": 99})  # a seq of its own is not kept: the store gives it one
    texts = store.event_texts(since=0)
    assert [json.loads(text) for _, text in texts] == store.events(since=0)
    assert [seq for seq, _ in texts] == [1, 2, 3]
    assert store.event_texts(since=1, kinds=["state_changed"]) == [texts[2]]
