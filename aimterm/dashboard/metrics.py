"""The dashboard's metrics: counts, latencies by tool, tokens and cost, and the turn rate
over time, taken from the events the view reads. Pure (no Textual, no clock of its own).

They cover the events read since the dashboard connected — the newest part of the daemon's
life it reads at a connect, then everything live — not a daemon's whole history.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LATENCIES_KEPT", "RATE_BUCKET_S", "Metrics", "percentile"]

#: Turn times kept per tool for its percentiles (the newest ones).
LATENCIES_KEPT = 2000
#: The turn-rate chart: one bar per bucket of this many seconds, this many bars.
RATE_BUCKET_S = 10.0
RATE_BUCKETS = 30


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


@dataclass
class Metrics:
    """What the events read so far add up to."""

    #: Turns ended, by status (done, failed, timeout, interrupted; waiting is not an end).
    turns: dict[str, int] = field(default_factory=dict)
    #: The tools' own time (busy to idle) of every turn done, in ms, summed, and how many.
    busy_ms: float = 0.0
    busy_n: int = 0
    #: The newest turn times (ms) by tool, for percentiles.
    latency: dict[str, deque[float]] = field(default_factory=dict)
    #: Prompts accepted and prompts over (any outcome): the difference is in flight.
    prompts_queued: int = 0
    prompts_over: int = 0
    tasks_started: set[tuple[str, str]] = field(default_factory=set)
    tasks_completed: int = 0
    tasks_failed: int = 0
    restarts: int = 0
    #: Tokens by kind and cost, summed over the turns whose tool's record gave them.
    tokens: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    #: When turns ended (event time), for the rate chart.
    ends: deque[float] = field(default_factory=lambda: deque(maxlen=50_000))

    def take(self, kind: str, data: Mapping[str, Any], tool: str | None = None) -> None:
        if kind == "turn_finished" and data.get("status") != "waiting":
            status = str(data.get("status"))
            self.turns[status] = self.turns.get(status, 0) + 1
            ts = _num(data.get("ts"))
            if ts is not None:
                self.ends.append(ts)
            busy = _num(data.get("busy_to_idle_ms"))
            if status == "done" and busy is not None:
                self.busy_ms += busy
                self.busy_n += 1
                self.latency.setdefault(tool or "?", deque(maxlen=LATENCIES_KEPT)).append(busy)
        elif kind == "prompt_queued":
            self.prompts_queued += 1
        elif kind == "prompt_finished":
            self.prompts_over += 1
            tokens = data.get("tokens")
            if isinstance(tokens, Mapping):
                for name, n in tokens.items():
                    if isinstance(n, int) and not isinstance(n, bool):
                        self.tokens[str(name)] = self.tokens.get(str(name), 0) + n
            cost = _num(data.get("cost_usd"))
            if cost is not None:
                self.cost_usd += cost
        elif kind == "task_started":
            self.tasks_started.add((str(data.get("run_id")), str(data.get("task_id"))))
        elif kind == "task_completed":
            self.tasks_completed += 1
        elif kind == "task_failed" and not data.get("retrying"):
            self.tasks_failed += 1  # a job that fails for good (a retry is not yet a failure)
        elif kind == "instance_restarting":
            self.restarts += 1

    @property
    def in_flight(self) -> int:
        return max(0, self.prompts_queued - self.prompts_over)

    @property
    def tasks_running(self) -> int:
        """Jobs (and plan steps) started and not yet over."""
        return max(0, len(self.tasks_started) - self.tasks_completed - self.tasks_failed)

    def by_tool(self) -> list[tuple[str, int, float | None, float | None]]:
        """(tool, turns done, p50 ms, p95 ms) over the newest turns of each tool."""
        return [(tool, len(times), percentile(times, 0.5), percentile(times, 0.95))
                for tool, times in sorted(self.latency.items())]

    def rate(self, now: float) -> list[float]:
        """Turns ended per bucket of :data:`RATE_BUCKET_S`, oldest first, the last one now."""
        bars = [0.0] * RATE_BUCKETS
        start = now - RATE_BUCKET_S * RATE_BUCKETS
        for ts in reversed(self.ends):
            if ts < start:
                break
            if ts <= now:
                bars[min(RATE_BUCKETS - 1, int((ts - start) / RATE_BUCKET_S))] += 1
        return bars

    def summary(self) -> str:
        done = self.turns.get("done", 0)
        bad = sum(n for status, n in self.turns.items() if status != "done")
        parts = [f"turns {done} done" + (f", {bad} not" if bad else "")]
        if self.busy_n:
            parts.append(f"mean turn {self.busy_ms / self.busy_n / 1000:.1f}s")
        parts.append(f"prompts in flight {self.in_flight}")
        if self.tasks_started or self.tasks_completed or self.tasks_failed:
            parts.append(f"jobs {self.tasks_completed} ok, {self.tasks_failed} failed, "
                         f"{self.tasks_running} running")
        if self.tokens:
            parts.append(f"tokens {sum(self.tokens.values())}")
        if self.cost_usd:
            parts.append(f"${self.cost_usd:.4f}")
        if self.restarts:
            parts.append(f"restarts {self.restarts}")
        return "  ·  ".join(parts)
