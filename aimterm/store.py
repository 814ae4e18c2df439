"""The durable state of the fleet: an append-only event log, the instances, the turns, the
job runs.

One SQLite file in WAL mode with ``synchronous=NORMAL``: every write is committed before the
call returns, so it survives the process being killed (only a power loss can take back the
last commits). The schema is versioned with ``PRAGMA user_version`` and grown by the
migrations in :data:`_MIGRATIONS`, never edited in place.

- ``events`` is append-only: triggers make UPDATE and DELETE fail, so the log is a faithful
  history (``seq`` orders it and lets a follower resume where it stopped).
- ``instances`` is the last known state of each instance (an upsert per change).
- ``turns`` records every prompt handed to an instance; a turn without ``finished`` is in
  flight. After a crash :meth:`Store.fail_inflight` marks those failed, so no prompt is
  silently dropped.
- ``runs``, ``jobs`` and ``attempts`` keep every batch of jobs, each job's spec and result,
  and each attempt at it, so a result outlives the client that asked for it.
- ``plan_runs`` and ``plan_steps`` add, for a run that is a plan, where its work goes and each
  step's state, branch and worktree, so the run can resume after a crash.

One connection is shared by all threads behind a lock; SQLite's own busy timeout covers a
second process (a CLI reading while the daemon writes).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from aimterm.errors import StoreError
from aimterm.events import Event
from aimterm.statedir import check_private_file, open_private, private_dirs

__all__ = ["SCHEMA_VERSION", "Store"]

#: Each entry migrates the schema from version ``i`` to ``i + 1``: a tuple of statements run in
#: one transaction. Append new entries; never edit a released one.
_MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            kind TEXT NOT NULL,
            instance TEXT,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX events_instance ON events (instance, seq)",
        "CREATE INDEX events_kind ON events (kind, seq)",
        """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
           BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
        """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
           BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
        """CREATE TABLE instances (
            id TEXT PRIMARY KEY,
            adapter TEXT,
            state TEXT,
            pid INTEGER,
            cwd TEXT,
            tags TEXT,
            restarts INTEGER,
            turns INTEGER,
            resume INTEGER,
            updated REAL,
            extra TEXT
        )""",
        """CREATE TABLE turns (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            instance TEXT NOT NULL,
            prompt TEXT NOT NULL,
            status TEXT NOT NULL,
            reply TEXT,
            error TEXT,
            started REAL NOT NULL,
            finished REAL
        )""",
        "CREATE INDEX turns_instance ON turns (instance, id)",
        "CREATE INDEX turns_inflight ON turns (id) WHERE finished IS NULL",
    ),
    (
        # Where the reply came from (the tool's record, or the screen), and what the record
        # said the turn used: tokens by kind (JSON), cost in US dollars.
        "ALTER TABLE turns ADD COLUMN reply_source TEXT",
        "ALTER TABLE turns ADD COLUMN tokens TEXT",
        "ALTER TABLE turns ADD COLUMN cost_usd REAL",
    ),
    (
        # Job runs: a batch of jobs (``runs``), each job with its spec and, once over, its
        # result as JSON (``jobs``), and every attempt at it (``attempts``).
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            source TEXT,
            pid INTEGER,
            jobs INTEGER NOT NULL,
            status TEXT NOT NULL,
            started REAL NOT NULL,
            finished REAL
        )""",
        """CREATE TABLE jobs (
            run_id TEXT NOT NULL REFERENCES runs (id),
            id TEXT NOT NULL,
            position INTEGER NOT NULL,
            tool TEXT NOT NULL,
            spec TEXT NOT NULL,
            status TEXT NOT NULL,
            result TEXT,
            finished REAL,
            PRIMARY KEY (run_id, id)
        )""",
        """CREATE TABLE attempts (
            run_id TEXT NOT NULL,
            job_id TEXT NOT NULL,
            number INTEGER NOT NULL,
            mode TEXT NOT NULL,
            instance TEXT,
            status TEXT NOT NULL,
            error TEXT,
            started REAL NOT NULL,
            finished REAL,
            PRIMARY KEY (run_id, job_id, number),
            FOREIGN KEY (run_id, job_id) REFERENCES jobs (run_id, id)
        )""",
        "CREATE INDEX runs_started ON runs (started)",
    ),
    (
        # Plan runs: a run (``runs``, one ``jobs`` row per step) that is a plan, with where
        # its work goes (``plan_runs``) and each step's state, branch and worktree
        # (``plan_steps``), updated on every move so a run can resume after a crash.
        """CREATE TABLE plan_runs (
            run_id TEXT PRIMARY KEY REFERENCES runs (id),
            plan_id TEXT NOT NULL,
            plan TEXT NOT NULL,
            repo TEXT NOT NULL,
            base TEXT NOT NULL,
            integration TEXT NOT NULL
        )""",
        """CREATE TABLE plan_steps (
            run_id TEXT NOT NULL REFERENCES plan_runs (run_id),
            step_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            branch TEXT,
            worktree TEXT,
            instance TEXT,
            started REAL,
            finished REAL,
            merge_commit TEXT,
            snapshot TEXT,
            error TEXT,
            detail TEXT,
            PRIMARY KEY (run_id, step_id)
        )""",
    ),
]

SCHEMA_VERSION = len(_MIGRATIONS)

_INSTANCE_FIELDS = ("adapter", "state", "pid", "cwd", "tags", "restarts", "turns", "resume",
                    "updated", "extra")
_PLAN_STEP_FIELDS = ("state", "attempts", "branch", "worktree", "instance", "started",
                     "finished", "merge_commit", "snapshot", "error", "detail")
_INFLIGHT = "running"
#: The files SQLite opens next to the database, by name.
_SIDE_FILES = ("-wal", "-shm", "-journal")


class Store:
    """The daemon's database. Thread-safe; a context manager that closes it."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        """Open (creating it, unless ``readonly``) the store at ``path``. A read-only store
        is how the CLI reads the history while no daemon runs: it never writes, and reads
        what a daemon writes meanwhile."""
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            if readonly:
                # SQLite follows symlinks, so none of its files may be one, or someone else's.
                os.close(open_private(self.path, os.O_RDONLY, create=False))
            else:
                private_dirs(self.path.parent)
                # Prompts and replies are private: create the file 0600 before SQLite does
                # (it would use the umask); the -wal and -shm files copy its permissions.
                os.close(open_private(self.path, os.O_RDWR))
            for suffix in _SIDE_FILES:
                check_private_file(f"{self.path}{suffix}")
            target = f"file:{quote(str(self.path))}?mode=ro" if readonly else str(self.path)
            self._conn = sqlite3.connect(target, timeout=5.0, isolation_level=None,
                                         check_same_thread=False, uri=readonly)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store {self.path}: {exc}") from exc
        try:
            self._conn.row_factory = sqlite3.Row
            if readonly:
                self._check_readable()
                return
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot put the store {self.path} in WAL mode (got {mode})")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(f"cannot use the store {self.path}: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise

    def _known_version(self) -> int:
        """The schema version of the file; one newer than this aimterm knows is refused."""
        version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(f"the store {self.path} has schema version {version}, newer than "
                             f"this aimterm knows ({SCHEMA_VERSION}); upgrade aimterm")
        return version

    def _check_readable(self) -> None:
        if self._known_version() == 0:
            raise StoreError(f"{self.path} is not an aimterm store (no schema)")

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        for version in range(self._known_version(), SCHEMA_VERSION):
            with self._transaction():
                for statement in _MIGRATIONS[version]:
                    self._conn.execute(statement)
                # PRAGMA takes no parameters; the value is an int we computed.
                self._conn.execute(f"PRAGMA user_version = {version + 1}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error). Callers hold ``_lock`` if needed."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- events ------------------------------------------------------------------------------

    def append_event(self, event: Event | Mapping[str, Any]) -> int:
        """Append one event (an :class:`Event` or its ``to_dict()`` form); return its ``seq``."""
        data = event.to_dict() if isinstance(event, Event) else dict(event)
        kind = data.get("kind")
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"an event needs a 'kind': {data!r}")
        data.pop("seq", None)
        ts = data.get("ts")
        if not isinstance(ts, (int, float)):
            ts = data["ts"] = time.time()
        instance = data.get("instance")
        # default=str: storing an event must not fail on an odd value (a Path, an enum).
        text = json.dumps(data, default=str, ensure_ascii=False)
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO events (ts, kind, instance, data) VALUES (?, ?, ?, ?)",
                (float(ts), kind, None if instance is None else str(instance), text))
            seq = cur.lastrowid
        assert seq is not None
        return seq

    def events(self, since: int = 0, limit: int | None = None, kinds: Sequence[str] = (),
               instance: str | None = None) -> list[dict[str, Any]]:
        """Events with ``seq > since``, oldest first, each a dict with its ``seq``."""
        out = []
        for seq, text in self._event_rows(since, limit, kinds, instance):
            data: dict[str, Any] = json.loads(text)
            data["seq"] = seq
            out.append(data)
        return out

    def event_texts(self, since: int = 0, limit: int | None = None, kinds: Sequence[str] = (),
                    instance: str | None = None) -> list[tuple[int, str]]:
        """:meth:`events` as ``(seq, JSON text)``, the text with its ``seq`` as the last key:
        what a follower sends, without decoding each event to encode it again."""
        out = []
        for seq, text in self._event_rows(since, limit, kinds, instance):
            body = text.rstrip()
            if not body.endswith("}"):  # (not an object: only a hand-edited store)
                data = {"value": json.loads(text), "seq": seq}
                out.append((seq, json.dumps(data, ensure_ascii=False)))
                continue
            sep = "" if body[:-1].rstrip() == "{" else ", "
            out.append((seq, f'{body[:-1]}{sep}"seq": {seq}}}'))
        return out

    def _event_rows(self, since: int, limit: int | None, kinds: Sequence[str],
                    instance: str | None) -> list[tuple[int, str]]:
        where, params = _event_filter(since, kinds, instance)
        sql = f"SELECT seq, data FROM events WHERE {where} ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [(int(row["seq"]), str(row["data"])) for row in rows]

    def seq_before_last(self, n: int, *, kinds: Sequence[str] = (),
                        instance: str | None = None) -> int:
        """The ``seq`` after which come the newest ``n`` events of these kinds and this
        instance (0 when there are no more than ``n``)."""
        where, params = _event_filter(0, kinds, instance)
        with self._lock:
            row = self._conn.execute(
                f"SELECT seq FROM events WHERE {where} ORDER BY seq DESC LIMIT 1 OFFSET ?",
                [*params, n]).fetchone()
        return int(row[0]) if row is not None else 0

    def last_seq(self) -> int:
        """The ``seq`` of the newest event; 0 for an empty log."""
        with self._lock:
            row = self._conn.execute("SELECT MAX(seq) FROM events").fetchone()
        return int(row[0] or 0)

    # -- instances ---------------------------------------------------------------------------

    def upsert_instance(self, **fields: Any) -> None:
        """Insert or update instance ``id``; only the fields given change. ``updated``
        defaults to now; ``tags`` (a list) and ``extra`` (a dict) are stored as JSON."""
        if "id" not in fields:
            raise ValueError("upsert_instance needs an id")
        unknown = set(fields) - {"id", *_INSTANCE_FIELDS}
        if unknown:
            raise ValueError(f"unknown instance fields: {', '.join(sorted(unknown))} "
                             f"(known: id, {', '.join(_INSTANCE_FIELDS)})")
        values = dict(fields)
        values.setdefault("updated", time.time())
        if "tags" in values and values["tags"] is not None:
            values["tags"] = json.dumps(sorted(values["tags"]))
        if "extra" in values and values["extra"] is not None:
            values["extra"] = json.dumps(values["extra"], default=str, ensure_ascii=False)
        if "resume" in values and values["resume"] is not None:
            values["resume"] = int(bool(values["resume"]))
        cols = list(values)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "id")
        sql = (f"INSERT INTO instances ({', '.join(cols)}) "
               f"VALUES ({', '.join('?' * len(cols))}) "
               f"ON CONFLICT (id) DO UPDATE SET {updates}")
        with self._lock:
            self._conn.execute(sql, [values[c] for c in cols])

    def instances(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM instances ORDER BY id").fetchall()
        out = []
        for row in rows:
            data = dict(row)
            data["tags"] = json.loads(data["tags"]) if data["tags"] is not None else []
            data["extra"] = json.loads(data["extra"]) if data["extra"] is not None else {}
            data["resume"] = bool(data["resume"]) if data["resume"] is not None else None
            out.append(data)
        return out

    def remove_instance(self, id: str) -> bool:
        """Forget instance ``id``; False if it was not there. Its events and turns stay."""
        with self._lock:
            cur = self._conn.execute("DELETE FROM instances WHERE id = ?", (id,))
        return cur.rowcount > 0

    # -- turns -------------------------------------------------------------------------------

    def turn_started(self, instance: str, prompt: str) -> int:
        """Record a prompt handed to ``instance``; returns the turn id."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO turns (instance, prompt, status, started) VALUES (?, ?, ?, ?)",
                (instance, prompt, _INFLIGHT, time.time()))
            turn_id = cur.lastrowid
        assert turn_id is not None
        return turn_id

    def turn_finished(self, turn_id: int, status: str, reply: str | None = None,
                      error: str | None = None, *, reply_source: str | None = None,
                      tokens: Mapping[str, int] | None = None,
                      cost_usd: float | None = None) -> None:
        with self._lock:
            cur = self._conn.execute(
                "UPDATE turns SET status = ?, reply = ?, error = ?, finished = ?,"
                " reply_source = COALESCE(?, reply_source), tokens = COALESCE(?, tokens),"
                " cost_usd = COALESCE(?, cost_usd) WHERE id = ?",
                (status, reply, error, time.time(), reply_source,
                 json.dumps(dict(tokens)) if tokens else None, cost_usd, turn_id))
        if cur.rowcount == 0:
            raise KeyError(f"no turn {turn_id} in the store")

    def turn(self, turn_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM turns WHERE id = ?", (turn_id,)).fetchone()
        return _turn_row(row) if row is not None else None

    def turns(self, instance: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Turns, newest first (of one instance if given)."""
        sql = "SELECT * FROM turns"
        params: list[Any] = []
        if instance is not None:
            sql += " WHERE instance = ?"
            params.append(instance)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            return [_turn_row(row) for row in self._conn.execute(sql, params).fetchall()]

    def inflight_turns(self) -> list[dict[str, Any]]:
        """Turns started and not finished, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM turns WHERE finished IS NULL ORDER BY id").fetchall()
        return [_turn_row(row) for row in rows]

    def fail_inflight(self, reason: str) -> list[dict[str, Any]]:
        """Mark every unfinished turn ``failed`` with ``reason`` (after a crash); return them."""
        now = time.time()
        with self._lock, self._transaction() as conn:
            ids = [row["id"] for row in
                   conn.execute("SELECT id FROM turns WHERE finished IS NULL ORDER BY id")]
            conn.executemany(
                "UPDATE turns SET status = 'failed', error = ?, finished = ? WHERE id = ?",
                [(reason, now, turn_id) for turn_id in ids])
            rows = [dict(conn.execute("SELECT * FROM turns WHERE id = ?", (i,)).fetchone())
                    for i in ids]
        return rows


    # -- job runs ----------------------------------------------------------------------------

    def run_started(self, run_id: str, jobs: Sequence[Mapping[str, Any]], *,
                    source: str | None = None) -> None:
        """Record a run and its jobs (each a job's ``to_dict()``), all ``queued``, at once."""
        now = time.time()
        with self._lock, self._transaction() as conn:
            conn.execute("INSERT INTO runs (id, source, pid, jobs, status, started)"
                         " VALUES (?, ?, ?, ?, 'running', ?)",
                         (run_id, source, os.getpid(), len(jobs), now))
            conn.executemany(
                "INSERT INTO jobs (run_id, id, position, tool, spec, status)"
                " VALUES (?, ?, ?, ?, ?, 'queued')",
                [(run_id, str(job["id"]), i, str(job["tool"]),
                  json.dumps(dict(job), ensure_ascii=False)) for i, job in enumerate(jobs)])

    def attempt_started(self, run_id: str, job_id: str, number: int, mode: str,
                        instance: str | None) -> None:
        with self._lock, self._transaction() as conn:
            conn.execute("INSERT INTO attempts (run_id, job_id, number, mode, instance, status,"
                         " started) VALUES (?, ?, ?, ?, ?, 'running', ?)",
                         (run_id, job_id, number, mode, instance, time.time()))
            conn.execute("UPDATE jobs SET status = 'running' WHERE run_id = ? AND id = ?",
                         (run_id, job_id))

    def attempt_finished(self, run_id: str, job_id: str, number: int, status: str,
                         error: str | None = None, *, instance: str | None = None) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE attempts SET status = ?, error = ?, finished = ?,"
                " instance = COALESCE(?, instance)"
                " WHERE run_id = ? AND job_id = ? AND number = ?",
                (status, error, time.time(), instance, run_id, job_id, number))

    def job_finished(self, run_id: str, job_id: str, result: Mapping[str, Any]) -> None:
        """Keep a job's result (a ``JobResult.to_dict()``); its status is the result's."""
        with self._lock:
            cur = self._conn.execute(
                "UPDATE jobs SET status = ?, result = ?, finished = ? WHERE run_id = ? AND id = ?",
                (str(result["status"]), json.dumps(dict(result), ensure_ascii=False),
                 time.time(), run_id, job_id))
        if cur.rowcount == 0:
            raise KeyError(f"no job {job_id!r} in run {run_id!r}")

    def run_finished(self, run_id: str, status: str) -> None:
        with self._lock:
            self._conn.execute("UPDATE runs SET status = ?, finished = ? WHERE id = ?",
                               (status, time.time(), run_id))

    def runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Runs, newest first, each with how many of its jobs ended in each status."""
        sql = "SELECT * FROM runs ORDER BY started DESC, id DESC"
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            rows = [dict(r) for r in self._conn.execute(sql, params).fetchall()]
            for row in rows:
                row["by_status"] = {r["status"]: r["n"] for r in self._conn.execute(
                    "SELECT status, COUNT(*) AS n FROM jobs WHERE run_id = ? GROUP BY status",
                    (row["id"],))}
        return rows

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return dict(row) if row is not None else None

    def run_jobs(self, run_id: str) -> list[dict[str, Any]]:
        """The run's jobs in their order: ``spec`` and ``result`` (None until over) decoded."""
        with self._lock:
            rows = self._conn.execute("SELECT * FROM jobs WHERE run_id = ? ORDER BY position",
                                      (run_id,)).fetchall()
        return [_job_row(row) for row in rows]

    def job_runs(self, job_id: str) -> list[str]:
        """The runs that hold a job with this id, newest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT runs.id FROM jobs JOIN runs ON runs.id = jobs.run_id WHERE jobs.id = ?"
                " ORDER BY runs.started DESC, runs.id DESC", (job_id,)).fetchall()
        return [row[0] for row in rows]

    def attempts(self, run_id: str, job_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM attempts WHERE run_id = ?"
        params: list[Any] = [run_id]
        if job_id is not None:
            sql += " AND job_id = ?"
            params.append(job_id)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY started, number", params).fetchall()
        return [dict(row) for row in rows]


    # -- plan runs ---------------------------------------------------------------------------

    def plan_run_started(self, run_id: str, *, plan_id: str, plan: Mapping[str, Any],
                         repo: str, base: str, integration: str, source: str | None,
                         steps: Sequence[Mapping[str, Any]]) -> None:
        """Record a plan run: its ``runs`` row and a job per step (as :meth:`run_started`),
        the plan itself, and every step ``pending``."""
        self.run_started(run_id, steps, source=source)
        with self._lock, self._transaction() as conn:
            conn.execute("INSERT INTO plan_runs (run_id, plan_id, plan, repo, base, integration)"
                         " VALUES (?, ?, ?, ?, ?, ?)",
                         (run_id, plan_id, json.dumps(dict(plan), ensure_ascii=False), repo,
                          base, integration))
            conn.executemany("INSERT INTO plan_steps (run_id, step_id, position, state)"
                             " VALUES (?, ?, ?, 'pending')",
                             [(run_id, str(s["id"]), i) for i, s in enumerate(steps)])

    def plan_step_update(self, run_id: str, step_id: str, **fields: Any) -> None:
        """Change some of a step's columns (``detail`` is kept as JSON)."""
        bad = set(fields) - set(_PLAN_STEP_FIELDS)
        if bad:
            raise ValueError(f"not plan step fields: {', '.join(sorted(bad))}")
        if "detail" in fields and fields["detail"] is not None:
            fields["detail"] = json.dumps(fields["detail"], ensure_ascii=False)
        names = sorted(fields)
        with self._lock:
            cur = self._conn.execute(
                f"UPDATE plan_steps SET {', '.join(f'{n} = ?' for n in names)}"  # noqa: S608
                " WHERE run_id = ? AND step_id = ?",
                [fields[n] for n in names] + [run_id, step_id])
        if cur.rowcount == 0:
            raise KeyError(f"no step {step_id!r} in plan run {run_id!r}")

    def plan_runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Plan runs, newest first: the run's row, the plan's id and where its work went, and
        how many steps are in each state."""
        sql = ("SELECT runs.*, plan_runs.plan_id, plan_runs.repo, plan_runs.integration"
               " FROM plan_runs JOIN runs ON runs.id = plan_runs.run_id"
               " ORDER BY runs.started DESC, runs.id DESC")
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            rows = [dict(r) for r in self._conn.execute(sql, params).fetchall()]
            for row in rows:
                row["by_state"] = {r["state"]: r["n"] for r in self._conn.execute(
                    "SELECT state, COUNT(*) AS n FROM plan_steps WHERE run_id = ?"
                    " GROUP BY state", (row["id"],))}
        return rows

    def plan_run(self, run_id: str) -> dict[str, Any] | None:
        """One plan run with its plan decoded, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT runs.*, plan_runs.plan_id, plan_runs.plan, plan_runs.repo,"
                " plan_runs.base, plan_runs.integration FROM plan_runs"
                " JOIN runs ON runs.id = plan_runs.run_id WHERE run_id = ?",
                (run_id,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["plan"] = json.loads(out["plan"])
        return out

    def plan_steps(self, run_id: str) -> list[dict[str, Any]]:
        """A plan run's steps in the plan's order, ``detail`` decoded."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM plan_steps WHERE run_id = ? ORDER BY position",
                (run_id,)).fetchall()
        out = []
        for row in rows:
            step = dict(row)
            step["detail"] = json.loads(step["detail"]) if step["detail"] else None
            out.append(step)
        return out

    def run_reopened(self, run_id: str) -> None:
        """A finished or interrupted run goes on (``--resume``): running again, by us."""
        with self._lock:
            self._conn.execute("UPDATE runs SET status = 'running', finished = NULL, pid = ?"
                               " WHERE id = ?", (os.getpid(), run_id))


def _job_row(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["spec"] = json.loads(out["spec"])
    out["result"] = json.loads(out["result"]) if out["result"] else None
    return out


def _turn_row(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["tokens"] = json.loads(out["tokens"]) if out.get("tokens") else {}
    return out


def _event_filter(since: int, kinds: Sequence[str] | str,
                  instance: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) of events after ``since``, of these kinds and
    this instance."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    sql = "seq > ?"
    params: list[Any] = [since]
    if kinds:
        sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
        params.extend(kinds)
    if instance is not None:
        sql += " AND instance = ?"
        params.append(instance)
    return sql, params
