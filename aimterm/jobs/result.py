"""What running a :class:`~aimterm.jobs.spec.Job` gave: :class:`JobResult`, and its JSON Schema.

A result is data only: :meth:`JobResult.to_dict` gives the JSON form (what ``RESULT_SCHEMA``
describes, what a store or the wire carries) and :meth:`JobResult.from_dict` reads it back,
refusing anything else with a :class:`ValueError` naming the key.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["OUTPUT_TAIL_CHARS", "RESULT_SCHEMA", "AcceptanceResult", "Durations", "JobResult",
           "JobStatus", "exit_code_for"]

#: How much of an acceptance command's output a result keeps: the end, where the failure is.
OUTPUT_TAIL_CHARS = 4000


class JobStatus(str, enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


#: A status's exit code when nothing more precise is known: the codes shells use for a
#: timeout (``timeout(1)``) and for an interrupt.
_EXIT_CODES = {JobStatus.SUCCEEDED: 0, JobStatus.FAILED: 1, JobStatus.TIMED_OUT: 124,
               JobStatus.CANCELLED: 130}


def exit_code_for(status: JobStatus) -> int:
    return _EXIT_CODES[status]


def _tail(text: str) -> str:
    return text if len(text) <= OUTPUT_TAIL_CHARS else text[-OUTPUT_TAIL_CHARS:]


@dataclass(frozen=True)
class AcceptanceResult:
    """One acceptance command as it ran: its exit code (``None``: it never finished, it was
    killed at its timeout), the tail of its output (stdout and stderr as they interleaved),
    and how long it took."""

    command: str
    exit_code: int | None
    output: str = ""
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", _tail(self.output))

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "exit_code": self.exit_code, "output": self.output,
                "duration_s": self.duration_s, "passed": self.passed}


@dataclass(frozen=True)
class Durations:
    """Where a job's time went, in seconds: waiting for a free instance, the tool's turns
    (every attempt), the acceptance commands."""

    queued: float = 0.0
    running: float = 0.0
    checking: float = 0.0

    @property
    def total(self) -> float:
        return self.queued + self.running + self.checking

    def to_dict(self) -> dict[str, float]:
        return {"queued": self.queued, "running": self.running, "checking": self.checking,
                "total": self.total}


@dataclass(frozen=True)
class JobResult:
    """The outcome of one job.

    ``exit_code`` is 0 exactly when the job succeeded; otherwise the failing acceptance
    command's code, or the status's (1 failed, 124 timed out, 130 cancelled) when left out.
    ``files_changed`` are the job's files (absolute paths) the run changed. ``instance`` is
    the instance of the last attempt; ``attempts`` counts every try (0: cancelled before one
    started). ``tokens`` (by kind) and ``cost_usd`` add up every attempt, where the tool's
    record gives them. ``error`` says what went wrong, in one line; ``error_report_path`` is
    where the full report was written.
    """

    job_id: str
    status: JobStatus
    exit_code: int | None = None
    reply: str = ""
    files_changed: tuple[str, ...] = ()
    acceptance: tuple[AcceptanceResult, ...] = ()
    instance: str | None = None
    attempts: int = 1
    duration_s: Durations = field(default_factory=Durations)
    tokens: Mapping[str, int] = field(default_factory=dict)
    cost_usd: float | None = None
    error: str | None = None
    error_report_path: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        status = JobStatus(self.status)
        object.__setattr__(self, "status", status)
        if self.exit_code is None:
            object.__setattr__(self, "exit_code", exit_code_for(status))
        if (self.exit_code == 0) != (status is JobStatus.SUCCEEDED):
            wanted = "0" if status is JobStatus.SUCCEEDED else "a code other than 0"
            raise ValueError(f"exit_code: expected {wanted} for status {status.value}, "
                             f"got {self.exit_code}")

    @property
    def success(self) -> bool:
        return self.status is JobStatus.SUCCEEDED

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "status": self.status.value, "success": self.success,
            "exit_code": self.exit_code, "reply": self.reply,
            "files_changed": list(self.files_changed),
            "acceptance": [a.to_dict() for a in self.acceptance],
            "instance": self.instance, "attempts": self.attempts,
            "duration_s": self.duration_s.to_dict(), "tokens": dict(self.tokens),
            "cost_usd": self.cost_usd, "error": self.error,
            "error_report_path": self.error_report_path, "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobResult:
        """The result :meth:`to_dict` gave (``success`` and the totals are checked, not read).
        Raises :class:`ValueError` naming the first key that is wrong."""
        r = _Reader(data, "")
        status = r.get("status", str)
        if status not in {s.value for s in JobStatus}:
            raise ValueError(f"status: expected one of: {', '.join(s.value for s in JobStatus)}"
                             f"; got {status!r}")
        durations = _Reader(r.get("duration_s", dict, {}), "duration_s.")
        tokens = _Reader(r.get("tokens", dict, {}), "tokens.")
        result = cls(
            job_id=r.get("job_id", str), status=JobStatus(status),
            exit_code=r.get("exit_code", int, None), reply=r.get("reply", str, ""),
            files_changed=tuple(r.items("files_changed", str)),
            acceptance=tuple(_acceptance(item, f"acceptance[{i}].")
                             for i, item in enumerate(r.items("acceptance", dict))),
            instance=r.get("instance", str, None), attempts=r.get("attempts", int, 1),
            duration_s=Durations(*(durations.get(k, float, 0.0)
                                   for k in ("queued", "running", "checking"))),
            tokens={k: tokens.get(k, int) for k in tokens.data},
            cost_usd=r.get("cost_usd", float, None), error=r.get("error", str, None),
            error_report_path=r.get("error_report_path", str, None),
            metadata=r.get("metadata", dict, {}),
        )
        if "success" in data and data["success"] is not result.success:
            raise ValueError(f"success: expected {str(result.success).lower()} for status "
                             f"{status}, got {data['success']!r}")
        return result


_MISSING = object()


class _Reader:
    """Typed reads from one mapping, each failure a ``ValueError`` naming the key."""

    def __init__(self, data: Any, prefix: str) -> None:
        if not isinstance(data, Mapping):
            raise ValueError(f"{prefix.rstrip('.') or 'result'}: expected a mapping, "
                             f"got {type(data).__name__}")
        self.data, self.prefix = data, prefix

    def get(self, key: str, kind: type, default: Any = _MISSING) -> Any:
        if key not in self.data:
            if default is _MISSING:
                raise ValueError(f"{self.prefix}{key}: missing")
            return default
        value = self.data[key]
        if value is None and default is None:
            return None
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value)
            value = float(value) if ok else value
        if not ok:
            raise ValueError(f"{self.prefix}{key}: expected {kind.__name__}, "
                             f"got {type(value).__name__}")
        return value

    def items(self, key: str, kind: type) -> list[Any]:
        items: list[Any] = self.get(key, list, [])
        for i, item in enumerate(items):
            if not isinstance(item, kind):
                raise ValueError(f"{self.prefix}{key}[{i}]: expected {kind.__name__}, "
                                 f"got {type(item).__name__}")
        return items


def _acceptance(data: Any, prefix: str) -> AcceptanceResult:
    r = _Reader(data, prefix)
    return AcceptanceResult(command=r.get("command", str), exit_code=r.get("exit_code", int, None),
                            output=r.get("output", str, ""),
                            duration_s=r.get("duration_s", float, 0.0))


def _num(description: str) -> dict[str, Any]:
    return {"type": "number", "minimum": 0, "description": description}


def _nullable(kind: str, description: str) -> dict[str, Any]:
    return {"type": [kind, "null"], "description": description}


RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://aimterm.dev/schema/job-result.json",
    "title": "aimterm job result",
    "description": "The outcome of one aimterm job (JobResult.to_dict()).",
    "type": "object",
    "required": ["job_id", "status", "success", "exit_code"],
    "additionalProperties": False,
    "properties": {
        "job_id": {"type": "string", "description": "The job's id."},
        "status": {"type": "string", "enum": [s.value for s in JobStatus],
                   "description": "How the job ended."},
        "success": {"type": "boolean", "description": "status is succeeded."},
        "exit_code": {"type": "integer", "description": "0 when it succeeded; else the failing "
                                                       "acceptance command's code, or 1 "
                                                       "(failed), 124 (timed out), 130 "
                                                       "(cancelled)."},
        "reply": {"type": "string", "description": "The tool's reply in the last attempt."},
        "files_changed": {"type": "array", "items": {"type": "string"},
                          "description": "The job's files the run changed."},
        "acceptance": {
            "type": "array",
            "description": "Each acceptance command as it ran, in order.",
            "items": {
                "type": "object", "additionalProperties": False,
                "required": ["command", "exit_code"],
                "properties": {
                    "command": {"type": "string", "description": "The shell command."},
                    "exit_code": _nullable("integer", "Its exit code; null: killed at its "
                                                      "timeout."),
                    "output": {"type": "string", "maxLength": OUTPUT_TAIL_CHARS,
                               "description": "The end of its output."},
                    "duration_s": _num("How long it ran, in seconds."),
                    "passed": {"type": "boolean", "description": "exit_code is 0."},
                },
            },
        },
        "instance": _nullable("string", "The instance of the last attempt."),
        "attempts": {"type": "integer", "minimum": 0, "description": "Tries, the first "
                                                                     "included."},
        "duration_s": {
            "type": "object", "additionalProperties": False,
            "description": "Where the time went, in seconds.",
            "properties": {"queued": _num("Waiting for a free instance."),
                           "running": _num("The tool's turns, every attempt."),
                           "checking": _num("The acceptance commands."),
                           "total": _num("The sum of the three.")},
        },
        "tokens": {"type": "object", "additionalProperties": {"type": "integer"},
                   "description": "Tokens by kind (input, output ...), every attempt."},
        "cost_usd": _nullable("number", "Cost in US dollars, where the tool reports it."),
        "error": _nullable("string", "What went wrong, in one line."),
        "error_report_path": _nullable("string", "Where the full error report was written."),
        "metadata": {"type": "object", "description": "The job's metadata."},
    },
}
