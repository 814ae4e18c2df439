"""Which step of a plan runs next: the steps' states as one table, and the rules that move them.

Pure: no threads, no processes, the clock handed in. The runner (:mod:`aimterm.plans.runner`)
asks :meth:`Scheduler.startable` what may start, tells it what happened, and drains
:attr:`Scheduler.changes` to record and show each move. Every move is checked against
:data:`TRANSITIONS`, so a state cannot be reached by a path the table does not allow.

The failure policies, once a step's retries are spent:

- ``continue``: its dependents run, as if it had succeeded (without its work);
- ``skip_dependents``: its dependents are skipped, and theirs;
- ``abort``: a critical step's failure cancels every step not yet started; a non-critical
  one's only skips its dependents (its dependents are never left waiting).

Whatever the policy, a step none of whose dependencies can still succeed is settled at once
(skipped), so a run always ends.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aimterm.plans.graph import PlanGraph
from aimterm.plans.spec import Plan

__all__ = ["FAILURES", "TERMINAL", "TRANSITIONS", "Change", "Scheduler", "StepState"]


class StepState(str, enum.Enum):
    PENDING = "pending"  # waiting for its dependencies, a free slot, or its group
    RUNNING = "running"  # an attempt is under way in the step's worktree
    RETRY_WAIT = "retry_wait"  # an attempt failed; the next starts after retry_delay_sec
    MERGING = "merging"  # its work is done and checked, queued on (or in) the merge train
    SUCCEEDED = "succeeded"  # merged into the integration branch (or nothing to merge)
    FAILED = "failed"  # every attempt failed (or timed out)
    GATE_FAILED = "gate_failed"  # merged, but the gate failed on the merged result: rolled back
    CONFLICT = "conflict"  # its branch conflicts with the integration branch: kept, not merged
    SKIPPED = "skipped"  # a dependency failed (or was skipped) and the policy skips dependents
    CANCELLED = "cancelled"  # the run was cancelled, or aborted by a critical step's failure


S = StepState
TRANSITIONS: dict[StepState, frozenset[StepState]] = {
    S.PENDING: frozenset({S.RUNNING, S.SKIPPED, S.CANCELLED}),
    S.RUNNING: frozenset({S.MERGING, S.SUCCEEDED, S.RETRY_WAIT, S.FAILED, S.CANCELLED}),
    S.RETRY_WAIT: frozenset({S.RUNNING, S.CANCELLED, S.SKIPPED}),
    # (back to PENDING: a step whose branch conflicts with one it was found to collide with
    # is done again on top of the merged result, once.)
    S.MERGING: frozenset({S.SUCCEEDED, S.GATE_FAILED, S.CONFLICT, S.PENDING, S.CANCELLED}),
    S.SUCCEEDED: frozenset(), S.FAILED: frozenset(), S.GATE_FAILED: frozenset(),
    S.CONFLICT: frozenset(), S.SKIPPED: frozenset(), S.CANCELLED: frozenset(),
}
TERMINAL = frozenset(s for s, moves in TRANSITIONS.items() if not moves)
#: The states in which a step's work did not land: its ``on_failure`` applies.
FAILURES = frozenset({S.FAILED, S.GATE_FAILED, S.CONFLICT})
#: What a recorded state becomes when a run resumes: work under way is done again.
RESUMED = {S.RUNNING: S.PENDING, S.RETRY_WAIT: S.PENDING, S.PENDING: S.PENDING}


@dataclass(frozen=True)
class Change:
    """One move of one step, for the record and the display."""

    step_id: str
    old: StepState
    new: StepState
    reason: str | None = None
    attempt: int = 0


@dataclass
class _Book:
    state: StepState = S.PENDING
    attempts: int = 0  # attempts started
    failures: int = 0  # attempts that failed (count against retries)
    not_before: float = 0.0  # RETRY_WAIT: when the next attempt may start
    error: str | None = None
    in_train: bool = False  # MERGING: taken by the merge train
    follows: set[str] = field(default_factory=set)  # steps this one must not overlap
    redone: bool = False  # done again once after a conflict with a step it follows
    rebase: bool = False  # the next attempt starts from the integration head, afresh


class Scheduler:
    """The state of every step of one run. Not thread-safe: the runner holds one lock.

    ``max_concurrency``: steps RUNNING at once (merges do not count). ``resume``: the states
    and attempt counts a run recorded (running work goes back to pending); ``now``: the clock.
    """

    def __init__(self, plan: Plan, *, max_concurrency: int | None = None,
                 resume: Mapping[str, tuple[StepState, int]] | None = None,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.plan = plan
        self.graph = PlanGraph(plan)
        self.max_concurrency = max_concurrency or plan.globals.max_concurrency
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._now = now
        self._steps = {s.id: s for s in plan.steps}
        self._index = {s.id: i for i, s in enumerate(plan.steps)}
        self._deps = {s.id: tuple(s.depends_on) for s in plan.steps}
        # Longest chain from each step to the end: the steps that hold up the most go first.
        weight = {sid: 1 for sid in self._steps}
        self._reach: dict[str, int] = {}
        for sid in reversed(self.graph.order()):
            below = [self._reach[d] for d in self._dependents_direct(sid)]
            self._reach[sid] = weight[sid] + (max(below) if below else 0)
        self._books = {sid: _Book() for sid in self._steps}
        self.changes: list[Change] = []
        self.aborted: str | None = None
        self.cancelled = False
        for sid, (state, attempts) in (resume or {}).items():
            if sid in self._books:
                book = self._books[sid]
                book.state = RESUMED.get(state, state)
                book.attempts = book.failures = attempts  # (MERGING stays: its work is
                # committed, it only needs merging)
        self._settle()

    # -- reading ---------------------------------------------------------------------------

    def state(self, step_id: str) -> StepState:
        return self._books[step_id].state

    def states(self) -> dict[str, StepState]:
        return {sid: b.state for sid, b in self._books.items()}

    def attempts(self, step_id: str) -> int:
        return self._books[step_id].attempts

    def error(self, step_id: str) -> str | None:
        return self._books[step_id].error

    def follows(self, step_id: str) -> frozenset[str]:
        return frozenset(self._books[step_id].follows)

    def rebase_wanted(self, step_id: str) -> bool:
        """Whether the step's next attempt starts afresh from the integration head."""
        return self._books[step_id].rebase

    def running(self) -> list[str]:
        return [sid for sid, b in self._books.items() if b.state is S.RUNNING]

    def done(self) -> bool:
        return all(b.state in TERMINAL for b in self._books.values())

    def status(self) -> str:
        """The run's verdict once :meth:`done`: ``failed`` if any step failed, ``cancelled``
        if the run was cancelled, else ``succeeded`` (every step succeeded or was skipped)."""
        states = {b.state for b in self._books.values()}
        if states & FAILURES:
            return "failed"
        if self.cancelled or S.CANCELLED in states:
            return "cancelled"
        return "succeeded"

    def next_timer(self) -> float | None:
        """When the earliest waiting retry may start (None: no retry waits)."""
        times = [b.not_before for b in self._books.values() if b.state is S.RETRY_WAIT]
        return min(times) if times else None

    # -- what may start ----------------------------------------------------------------------

    def startable(self) -> list[str]:
        """The steps that may start now, most important first (the longest chain below them,
        then file order), within ``max_concurrency``, never two of one conflict group, never
        one beside a step it was found to collide with."""
        if self.cancelled or self.aborted:
            return []
        now = self._now()
        free = self.max_concurrency - len(self.running())
        busy_groups = {self._steps[sid].conflict_group for sid, b in self._books.items()
                       if b.state in (S.RUNNING, S.MERGING)} - {None}
        out: list[str] = []
        for sid in sorted(self._books, key=lambda s: (-self._reach[s], self._index[s])):
            if free <= 0:
                break
            book = self._books[sid]
            if book.state is S.RETRY_WAIT and book.not_before > now:
                continue
            if book.state not in (S.PENDING, S.RETRY_WAIT):
                continue
            if not all(self._satisfied(d) for d in self._deps[sid]):
                continue
            if any(self._books[f].state not in TERMINAL for f in book.follows):
                continue
            group = self._steps[sid].conflict_group
            if group is not None and group in busy_groups:
                continue
            out.append(sid)
            free -= 1
            if group is not None:
                busy_groups.add(group)
        return out

    def mergeable(self) -> list[str]:
        """Steps whose work waits for the merge train and may merge now, in a deterministic
        order (file order): not before a step they follow is over."""
        return [sid for sid in sorted(self._books, key=self._index.__getitem__)
                if (b := self._books[sid]).state is S.MERGING and not b.in_train
                and all(self._books[f].state in TERMINAL for f in b.follows)]

    # -- what happened -----------------------------------------------------------------------

    def start(self, step_id: str) -> int:
        """An attempt starts; its number."""
        book = self._books[step_id]
        book.attempts += 1
        self._move(step_id, S.RUNNING)
        return book.attempts

    def attempt_succeeded(self, step_id: str) -> StepState:
        """The attempt's turn ended and its acceptance tests passed: an editing step goes to
        the merge train, any other is done."""
        book = self._books[step_id]
        book.error = None
        book.rebase = False
        target = S.MERGING if self._steps[step_id].edits else S.SUCCEEDED
        self._move(step_id, target)
        self._settle()
        return target

    def attempt_failed(self, step_id: str, error: str) -> StepState:
        """The attempt failed: another follows after ``retry_delay_sec`` while retries are
        left (the clock is not held up meanwhile), else the step failed."""
        step, book = self._steps[step_id], self._books[step_id]
        book.failures += 1
        book.error = error
        if self.cancelled:
            self._move(step_id, S.CANCELLED, "the run was cancelled")
        elif book.failures <= step.retries and not self.aborted:
            book.not_before = self._now() + step.retry_delay_s
            self._move(step_id, S.RETRY_WAIT, error)
        else:
            self._fail(step_id, S.FAILED, error)
        return book.state

    def merge_started(self, step_id: str) -> None:
        self._books[step_id].in_train = True

    def merged(self, step_id: str, outcome: str, error: str | None = None) -> StepState:
        """The merge train's verdict: ``merged`` or ``empty`` (nothing to merge) succeed;
        ``gate_failed`` and ``conflict`` fail the step — but a conflict with a step this one
        was found to collide with sends it back, once, to be done on top of the merged
        result (its first work is kept)."""
        book = self._books[step_id]
        book.in_train = False
        if outcome in ("merged", "empty"):
            self._move(step_id, S.SUCCEEDED)
        elif outcome == "conflict" and book.follows and not book.redone and not self.aborted:
            book.redone = book.rebase = True
            self._move(step_id, S.PENDING, error or "conflict: done again on the merged result")
        elif outcome in ("conflict", "gate_failed"):
            self._fail(step_id, S.CONFLICT if outcome == "conflict" else S.GATE_FAILED, error)
        else:
            raise ValueError(f"unknown merge outcome {outcome!r}")
        self._settle()
        return book.state

    def serialise(self, first: str, then: str) -> bool:
        """``then``'s work was found to collide with ``first``'s: ``then`` does not start while
        ``first`` runs, and merges only after it. False if already known (or if it would make
        a loop: then ``first`` follows ``then`` already)."""
        if first == then or first in self._books[then].follows \
                or then in self._books[first].follows:
            return False
        self._books[then].follows.add(first)
        return True

    def cancel(self, reason: str = "the run was cancelled") -> None:
        """No step starts again; those waiting are cancelled; running ones are cancelled as
        they end (:meth:`attempt_failed`), merges under way finish."""
        self.cancelled = True
        for sid, book in self._books.items():
            if book.state in (S.PENDING, S.RETRY_WAIT) or (
                    book.state is S.MERGING and not book.in_train):
                self._move(sid, S.CANCELLED, reason)

    # -- rules -------------------------------------------------------------------------------

    def _satisfied(self, dep: str) -> bool:
        state = self._books[dep].state
        return state is S.SUCCEEDED or (
            state in FAILURES and self._steps[dep].on_failure == "continue")

    def _fail(self, step_id: str, state: StepState, error: str | None) -> None:
        step = self._steps[step_id]
        self._books[step_id].error = error
        self._move(step_id, state, error)
        if step.on_failure == "abort" and step.critical:
            self.aborted = f"critical step {step_id!r} failed"
            for sid, book in self._books.items():
                if book.state in (S.PENDING, S.RETRY_WAIT):
                    self._move(sid, S.CANCELLED, self.aborted)
        self._settle()  # skip_dependents, and abort of a non-critical step: skip dependents

    def _settle(self) -> None:
        """Skip every waiting step that can no longer run: a dependency is over without
        satisfying it. Repeats until nothing moves, so skips travel down the graph."""
        moved = True
        while moved:
            moved = False
            for sid in sorted(self._books, key=self._index.__getitem__):
                book = self._books[sid]
                if book.state not in (S.PENDING, S.RETRY_WAIT):
                    continue
                blocker = next((d for d in self._deps[sid] if self._books[d].state in TERMINAL
                                and not self._satisfied(d)), None)
                if blocker is not None:
                    how = self._books[blocker].state.value
                    self._move(sid, S.SKIPPED, f"dependency {blocker!r} {how}")
                    moved = True

    def _move(self, step_id: str, new: StepState, reason: str | None = None) -> None:
        book = self._books[step_id]
        if new not in TRANSITIONS[book.state]:
            raise RuntimeError(f"step {step_id!r}: {book.state.value} -> {new.value} is not "
                               "a move the plan's state table allows")
        self.changes.append(Change(step_id, book.state, new, reason, book.attempts))
        book.state = new

    def _dependents_direct(self, step_id: str) -> list[str]:
        return [sid for sid, deps in self._deps.items() if step_id in deps]

    def drain(self) -> list[Change]:
        """The moves since the last call, oldest first."""
        out, self.changes = self.changes, []
        return out
