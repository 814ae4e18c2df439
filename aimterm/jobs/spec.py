"""The :class:`Job`: one prompt for one tool, the files it works on, and how success is decided.

A job is data only; :mod:`aimterm.jobs.loader` builds it from a job file and checks every
value, :mod:`aimterm.jobs.schema` publishes the same rules as JSON Schema. The bounds below
are shared by both, so the file format and the checks cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aimterm.adapter.schema import MAX_SECONDS

__all__ = ["ID_PATTERN", "MAX_ACCEPTANCE", "MAX_ENV", "MAX_FILES", "MAX_ID_LENGTH", "MAX_JOBS",
           "MAX_RETRIES", "MAX_SECONDS", "MAX_TAGS", "Job"]

#: What a job id may look like: it names log and report files, so no '/' and no spaces.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_ID_LENGTH = 128
#: Jobs in one file, files per job, acceptance commands, tags, environment variables: far
#: past real use, small enough that one bad file cannot make a run unmanageable.
MAX_JOBS = 1000
MAX_FILES = 1000
MAX_ACCEPTANCE = 32
MAX_TAGS = 32
MAX_ENV = 256
#: Retries after the first attempt. The plan's own range is 0-5; a job that fails ten times
#: in a row needs a person, not an eleventh try.
MAX_RETRIES = 10


@dataclass(frozen=True)
class Job:
    """One unit of work for the fleet.

    ``files`` and ``cwd`` are absolute once loaded from a file. ``timeout_s`` bounds the
    tool's turn; ``None`` leaves it to the adapter's ``turn_timeout_s``. ``retries`` counts
    attempts after the first (``0``: one attempt). ``acceptance`` holds shell commands, run in
    ``cwd`` after the turn: the job succeeded when every one exits 0 (with none, when the turn
    ended normally). ``key`` keeps jobs with the same key on one instance (sticky routing);
    ``tags`` send the job only to instances that carry all of them. ``metadata`` is free data
    carried through to the result; ``error_report`` is where a failure's report is written.
    """

    id: str
    tool: str
    prompt: str
    files: tuple[str, ...] = ()
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    retries: int = 0
    acceptance: tuple[str, ...] = ()
    key: str | None = None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    error_report: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The job in the file format (defaults left out); loading it gives this job back."""
        out: dict[str, Any] = {"id": self.id, "tool": self.tool, "prompt": self.prompt}
        if self.files:
            out["files"] = list(self.files)
        if self.cwd is not None:
            out["cwd"] = self.cwd
        if self.env:
            out["env"] = dict(self.env)
        if self.timeout_s is not None:
            out["timeout_s"] = self.timeout_s
        if self.retries:
            out["retries"] = self.retries
        if self.acceptance:
            out["acceptance"] = list(self.acceptance)
        if self.key is not None:
            out["key"] = self.key
        if self.tags:
            out["tags"] = list(self.tags)
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        if self.error_report is not None:
            out["error_report"] = self.error_report
        return out
