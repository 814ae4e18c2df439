"""A job put into an adapter's words: the turns a pooled instance gets, the one-shot argv.

The adapter's :class:`~aimterm.adapter.spec.JobRecipe` says how its tool takes a job; this
module fills the recipe in for one :class:`~aimterm.jobs.spec.Job`. It is pure (no I/O but
reading the current directory when a job has no cwd) so the orchestrator, ``jobs`` commands
that show what would run, and the tests all render a job the same way.

File paths are given relative to the job's cwd when they are inside it (what a person would
type, and what tools that refuse paths outside their repository accept), else absolute.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from aimterm.adapter.spec import FILE_PLACEHOLDER, FILES_ARGS, MESSAGE_PLACEHOLDER, JobRecipe, fill_template
from aimterm.jobs.spec import Job

__all__ = ["JobTurns", "job_files", "job_turns", "job_values", "oneshot_argv",
           "oneshot_env_values"]


@dataclass(frozen=True)
class JobTurns:
    """What one job sends to a pooled instance, in order."""

    before: tuple[str, ...]  # e.g. one "/add f" per file
    prompt: str
    after: tuple[str, ...]  # sent whatever happened, to reset the tool for the next job


def _cwd(job: Job) -> str:
    return os.path.abspath(job.cwd) if job.cwd is not None else os.getcwd()


def job_files(job: Job) -> tuple[str, ...]:
    """The job's files as the tool should see them: relative to the job's cwd when inside
    it, else absolute. A relative path is taken as relative to the job's cwd; with no cwd,
    absolute paths stay absolute and relative ones stay as they are (the tool's own working
    directory is not known here)."""
    if job.cwd is None:
        return tuple(os.path.normpath(path) for path in job.files)
    cwd = os.path.abspath(job.cwd)
    out = []
    for path in job.files:
        full = os.path.normpath(os.path.join(cwd, path))
        inside = os.path.commonpath([cwd, full]) == cwd
        out.append(os.path.relpath(full, cwd) if inside else full)
    return tuple(out)


def job_values(job: Job) -> dict[str, str]:
    """Every placeholder of a recipe text
    (:data:`~aimterm.adapter.spec.JOB_PLACEHOLDERS`), filled for ``job``."""
    return {"prompt": job.prompt, "files": " ".join(job_files(job)), "cwd": _cwd(job),
            "python": sys.executable}


def job_turns(recipe: JobRecipe, job: Job) -> JobTurns:
    """The turns of ``job`` on a pooled instance: a ``files`` turn per file (if the recipe
    has one), the prompt (``prompt_with_files`` when the job names files), the ``after``
    turns."""
    values = job_values(job)
    files = job_files(job)
    before: tuple[str, ...] = ()
    if recipe.files is not None:
        before = tuple(fill_template(recipe.files, {**values, FILE_PLACEHOLDER: path})
                       for path in files)
    text = recipe.prompt
    if files and recipe.prompt_with_files is not None:
        text = recipe.prompt_with_files
    return JobTurns(before=before, prompt=fill_template(text, values),
                    after=tuple(fill_template(turn, values) for turn in recipe.after))


def _oneshot_values(recipe: JobRecipe, job: Job) -> dict[str, str]:
    values = job_values(job)
    values[MESSAGE_PLACEHOLDER] = job_turns(recipe, job).prompt
    return values


def oneshot_argv(recipe: JobRecipe, job: Job) -> list[str] | None:
    """The argv that runs ``job`` with the tool's non-interactive form, or None when the
    adapter has none. An argument that is exactly ``{files...}`` becomes one per file;
    ``{message}`` is the prompt as the prompt turn would send it (files named)."""
    if recipe.oneshot is None:
        return None
    values = _oneshot_values(recipe, job)
    argv: list[str] = []
    for arg in recipe.oneshot:
        if arg == FILES_ARGS:
            argv.extend(job_files(job))
        else:
            argv.append(fill_template(arg, values))
    return argv


def oneshot_env_values(recipe: JobRecipe, job: Job) -> dict[str, str]:
    """The recipe's ``oneshot_env``, filled for ``job``."""
    values = _oneshot_values(recipe, job)
    return {name: fill_template(value, values) for name, value in recipe.oneshot_env}
