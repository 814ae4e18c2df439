"""Job files (YAML or JSON) to :class:`~aimterm.jobs.spec.Job` objects.

A file holds one job, a list of jobs, or ``{jobs: [...]}``; each job is in aimterm's form or
the plan's (:mod:`aimterm.jobs.schema` says how the plan's maps). Every mistake is one
:class:`~aimterm.errors.ConfigError` reading ``path:line: key: what was expected``; the first
one met is reported. Reading is bounded by the YAML reader (size, depth, aliases), and each
list by the bounds in :mod:`aimterm.jobs.spec`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from aimterm.adapter.yamlfile import KeyPath, YamlFile, format_key, parse_yaml, read_yaml_file

# The cluster file's checker: every config file words its mistakes alike.
from aimterm.config import got
from aimterm.errors import ConfigError
from aimterm.jobs.checker import FileChecker, json_tabs
from aimterm.jobs.schema import (
    JOB_KEYS,
    MESSAGE_FILE_FLAG,
    PLAN_DEFAULT_RETRIES,
    PLAN_JOB_KEYS,
    PLAN_METADATA_KEYS,
    PLAN_PATHS_KEYS,
    PROMPT_FLAGS,
    RETRY_POLICIES,
)
from aimterm.jobs.spec import (
    ID_PATTERN,
    MAX_ACCEPTANCE,
    MAX_ENV,
    MAX_FILES,
    MAX_ID_LENGTH,
    MAX_JOBS,
    MAX_RETRIES,
    MAX_TAGS,
    Job,
)

__all__ = ["jobs_from_data", "load_jobs", "load_jobs_text"]

_ID_RE = re.compile(ID_PATTERN)
_ID_HELP = (f"a job id (letters, digits, '.', '_' or '-', starting with a letter or digit; at "
            f"most {MAX_ID_LENGTH} characters)")
_SHAPE_HELP = "a job, a list of jobs, or {jobs: [...]}"
_PROMPT_HELP = (f"{', '.join(f'{f} TEXT' for f in PROMPT_FLAGS)} or {MESSAGE_FILE_FLAG} FILE "
                "in command.args, or metadata.message_file")
_REQUIRED = {"id": "the job's id", "tool": "the adapter that runs it",
             "prompt": "what the tool is asked to do"}


class _JobChecker(FileChecker):
    def ident(self, value: Any, key: KeyPath) -> str:
        if not isinstance(value, str) or not _ID_RE.match(value) or len(value) > MAX_ID_LENGTH:
            raise self.fail(key, f"expected {_ID_HELP}, got {got(value)}")
        return value

    def prompt(self, value: Any, key: KeyPath) -> str:
        # Trailing whitespace never matters to a tool, and a stray newline could submit early.
        text = self.string(value, key).rstrip()
        if not text:
            raise self.fail(key, "expected a prompt, got only whitespace")
        return text

    def where(self, value: Any, key: KeyPath, base: Path) -> str:
        return os.path.normpath(self.path(value, key, base))

    def where_all(self, value: Any, key: KeyPath, base: Path) -> tuple[str, ...]:
        items = self.bounded(value, key, MAX_FILES, "file paths")
        return tuple(self.where(item, key + (i,), base) for i, item in enumerate(items))

    def timeout(self, value: Any, key: KeyPath, minimum: float = 0) -> float | None:
        if value is None:
            return None
        if isinstance(value, float) and not math.isfinite(value):  # only from Python data
            raise self.fail(key, f"expected a finite number, got {value}")
        seconds = self.number(value, key, positive=True)
        if seconds < minimum:
            raise self.fail(key, f"expected a number >= {minimum:g}, got {seconds:g}")
        return seconds

    def retries(self, value: Any, key: KeyPath) -> int:
        count = self.integer(value, key, 0)
        if count > MAX_RETRIES:
            raise self.fail(key, f"expected an integer from 0 to {MAX_RETRIES}, got {count}")
        return count

    def env(self, value: Any, key: KeyPath) -> dict[str, str]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping of names to values, got {got(value)}")
        if len(value) > MAX_ENV:
            raise self.fail(key, f"expected at most {MAX_ENV} variables, got {len(value)}")
        out = {}
        for name, item in value.items():
            at = key + (name,)
            if not name or "=" in name or "\x00" in name:
                raise self.fail(at, "expected a variable name (not empty, no '=')")
            if item is None or isinstance(item, (dict, list)) or not isinstance(
                    item, (str, int, float)):
                raise self.fail(at, f"expected a string, a number, or true/false, "
                                    f"got {got(item)}")
            text = str(item).lower() if isinstance(item, bool) else str(item)
            if "\x00" in text:
                raise self.fail(at, "expected text without NUL characters")
            out[name] = text
        return out


def _entries(c: _JobChecker, data: Any) -> list[tuple[KeyPath, Any]]:
    if data is None:
        raise c.fail((), f"empty job file: expected {_SHAPE_HELP}")
    prefix: KeyPath = ()
    if isinstance(data, dict) and "jobs" in data:
        c.mapping(data, (), ("jobs",))
        data, prefix = data["jobs"], ("jobs",)
        if not isinstance(data, list):
            raise c.fail(prefix, f"expected a list of jobs, got {got(data)}")
    elif isinstance(data, dict):
        return [((), data)]
    elif not isinstance(data, list):
        raise c.fail((), f"expected {_SHAPE_HELP}, got {got(data)}")
    if not data:
        raise c.fail(prefix, "expected at least one job, got an empty list")
    c.bounded(data, prefix, MAX_JOBS, "jobs")
    return [(prefix + (i,), item) for i, item in enumerate(data)]


def _job(c: _JobChecker, raw: dict[str, Any], key: KeyPath, base: Path) -> Job:
    raw = c.mapping(raw, key, JOB_KEYS)
    for name, what in _REQUIRED.items():
        if name not in raw:
            raise c.fail(key, f"missing key {name!r} ({what})")
    kw: dict[str, Any] = {"id": c.ident(raw["id"], key + ("id",)),
                          "tool": c.tool(raw["tool"], key + ("tool",)),
                          "prompt": c.prompt(raw["prompt"], key + ("prompt",))}
    cwd = c.where(raw["cwd"], key + ("cwd",), base) if "cwd" in raw else None
    kw["cwd"] = cwd
    if "files" in raw:
        kw["files"] = c.where_all(raw["files"], key + ("files",), Path(cwd or base))
    if "env" in raw:
        kw["env"] = c.env(raw["env"], key + ("env",))
    if "timeout_s" in raw:
        kw["timeout_s"] = c.timeout(raw["timeout_s"], key + ("timeout_s",))
    if "retries" in raw:
        kw["retries"] = c.retries(raw["retries"], key + ("retries",))
    if "acceptance" in raw:
        kw["acceptance"] = c.strings(raw["acceptance"], key + ("acceptance",), MAX_ACCEPTANCE,
                                     "shell commands")
    if "key" in raw:
        kw["key"] = c.optional(raw["key"], key + ("key",))
    if "tags" in raw:
        kw["tags"] = c.strings(raw["tags"], key + ("tags",), MAX_TAGS, "tags")
    if "metadata" in raw:
        kw["metadata"] = c.free(raw["metadata"], key + ("metadata",))
    if "error_report" in raw:
        kw["error_report"] = c.where(raw["error_report"], key + ("error_report",), base)
    return Job(**kw)


def _message_file(c: _JobChecker, value: Any, key: KeyPath, base: Path) -> str:
    path = c.where(value, key, base)
    try:
        text = read_yaml_file(path, "message file")  # bounded like a job file
    except ConfigError as exc:
        raise c.fail(key, f"{path}: {exc.reason}") from None
    if not text.strip():
        raise c.fail(key, f"{path}: the message file is empty (expected the prompt)")
    return text.rstrip()


def _command_prompt(c: _JobChecker, command: dict[str, Any], key: KeyPath,
                    workdir: Path) -> str | None:
    """The prompt in the plan's one-shot argv, or ``None`` when it carries none."""
    args = command.get("args", [])
    for index, arg in enumerate(args):
        for flag in (*PROMPT_FLAGS, MESSAGE_FILE_FLAG):
            if arg == flag and index + 1 < len(args):
                value, at = args[index + 1], key + ("args", index + 1)
            elif flag.startswith("--") and arg.startswith(flag + "="):
                value, at = arg[len(flag) + 1:], key + ("args", index)
            else:
                continue
            if flag == MESSAGE_FILE_FLAG:
                return _message_file(c, value, at, workdir)
            return c.prompt(value, at)
    return None


def _plan_job(c: _JobChecker, raw: dict[str, Any], key: KeyPath, base: Path) -> Job:
    """A job in the plan's form, mapped as :mod:`aimterm.jobs.schema` describes."""
    raw = c.mapping(raw, key, PLAN_JOB_KEYS)
    if "tool" not in raw:
        raise c.fail(key, f"missing key 'tool' ({_REQUIRED['tool']})")
    kw: dict[str, Any] = {"id": c.ident(raw["job_id"], key + ("job_id",)),
                          "tool": c.tool(raw["tool"], key + ("tool",))}
    kept: dict[str, Any] = {}
    for name in ("workstream_id", "run_id"):
        if name in raw:
            kept[name] = c.string(raw[name], key + (name,))
    kw["key"] = kept.get("workstream_id")
    paths = c.mapping(raw.get("paths", {}), key + ("paths",), PLAN_PATHS_KEYS)
    at = key + ("paths",)
    root = Path(c.where(paths["repo_root"], at + ("repo_root",), base)) \
        if "repo_root" in paths else None
    if root is not None:
        kept["repo_root"] = str(root)
    if "working_dir" in paths:
        kw["cwd"] = c.where(paths["working_dir"], at + ("working_dir",), root or base)
    if "log_file" in paths:
        kept["log_file"] = c.where(paths["log_file"], at + ("log_file",), root or base)
    if "error_report" in paths:
        kw["error_report"] = c.where(paths["error_report"], at + ("error_report",),
                                     root or base)
    workdir = Path(kw.get("cwd") or base)
    if "env" in raw:
        kw["env"] = c.env(raw["env"], key + ("env",))
    if "acceptance_tests" in raw:
        kw["acceptance"] = c.strings(raw["acceptance_tests"], key + ("acceptance_tests",),
                                     MAX_ACCEPTANCE, "shell commands")
    meta = c.free(raw.get("metadata", {}), key + ("metadata",))
    at = key + ("metadata",)
    if "timeout_seconds" in meta:
        kw["timeout_s"] = c.timeout(meta["timeout_seconds"], at + ("timeout_seconds",), 1)
    kw["retries"] = PLAN_DEFAULT_RETRIES
    if "max_retries" in meta:
        kw["retries"] = c.retries(meta["max_retries"], at + ("max_retries",))
    if "retry_policy" in meta:
        policy = meta["retry_policy"]
        if policy not in RETRY_POLICIES:
            raise c.fail(at + ("retry_policy",), f"expected one of: {', '.join(RETRY_POLICIES)}"
                                                 f"; got {got(policy)}")
        if policy == "none":
            if meta.get("max_retries", 0) > 0:
                raise c.fail(at + ("max_retries",),
                             f"{meta['max_retries']} retries with retry_policy none: set "
                             f"max_retries to 0 or choose another retry_policy")
            kw["retries"] = 0
    if "files_scope" in meta:
        kw["files"] = c.where_all(meta["files_scope"], at + ("files_scope",), workdir)
    prompt = None
    if "command" in raw:
        command = c.mapping(raw["command"], key + ("command",), ("exe", "args"))
        if "exe" not in command:
            raise c.fail(key + ("command",), "missing key 'exe' (the program)")
        kept["command"] = {"exe": c.string(command["exe"], key + ("command", "exe")),
                           "args": c.bounded(command.get("args", []), key + ("command", "args"),
                                             1000, "arguments")}
        for i, arg in enumerate(kept["command"]["args"]):
            if not isinstance(arg, str):
                raise c.fail(key + ("command", "args", i), f"expected a string, got {got(arg)}")
        prompt = _command_prompt(c, command, key + ("command",), workdir)
    if prompt is None and "message_file" in meta:
        prompt = _message_file(c, meta["message_file"], at + ("message_file",), workdir)
    if prompt is None:
        raise c.fail(key + ("command",) if "command" in raw else key,
                     f"no prompt: expected {_PROMPT_HELP}")
    kw["prompt"] = prompt
    rest = {k: v for k, v in meta.items() if k not in PLAN_METADATA_KEYS or k == "retry_policy"}
    kw["metadata"] = {**rest, **kept}
    return Job(**kw)


def _build(c: _JobChecker, base: Path) -> list[Job]:
    data = c.clean(c.doc.data, ())
    jobs: list[Job] = []
    seen: dict[str, KeyPath] = {}
    for key, item in _entries(c, data):
        if not isinstance(item, dict):
            raise c.fail(key, f"expected a job (a mapping), got {got(item)}")
        if "job_id" in item and "id" in item:
            raise c.fail(key, "both 'id' and 'job_id': write a job in one form, aimterm's "
                              "(id) or the plan's (job_id)")
        plan = "job_id" in item
        job = _plan_job(c, item, key, base) if plan else _job(c, item, key, base)
        id_key = key + ("job_id" if plan else "id",)
        if job.id in seen:
            first = seen[job.id]
            where = f", line {c.doc.line(first)}" if c.lines else ""
            raise c.fail(id_key, f"duplicate id {job.id!r} ({format_key(first[:-1])} has it "
                                 f"too{where})")
        seen[job.id] = id_key
        jobs.append(job)
    return jobs


def load_jobs_text(text: str, name: str, *, base: str | os.PathLike[str] | None = None,
                   tools: Collection[str] | None = None) -> list[Job]:
    """The jobs in ``text`` (YAML or JSON), shown as ``name`` in messages. Relative paths are
    relative to ``base`` (default: the current folder). With ``tools``, a job's tool must be
    one of them. Raises :class:`~aimterm.errors.ConfigError`."""
    doc = parse_yaml(json_tabs(text), name)  # bounded: size, depth, aliases
    folder = Path(base).expanduser().resolve() if base is not None else Path.cwd()
    return _build(_JobChecker(doc, lines=True, tools=tools), folder)


def load_jobs(path: str | os.PathLike[str], *,
              tools: Collection[str] | None = None) -> list[Job]:
    """The jobs in the file at ``path``; relative paths are relative to its folder."""
    shown = os.fspath(path)
    text = read_yaml_file(shown, "job file")  # never more than 1 MiB is read
    return load_jobs_text(text, shown, base=Path(shown).expanduser().resolve().parent,
                          tools=tools)


def jobs_from_data(data: Any, name: str = "<jobs>", *,
                   base: str | os.PathLike[str] | None = None,
                   tools: Collection[str] | None = None) -> list[Job]:
    """Jobs from plain data (what a caller built in Python, or parsed JSON): a job mapping,
    a list of them, or ``{"jobs": [...]}``, checked like a file (messages have no line)."""
    doc = YamlFile(data=data, lines={(): 1}, path=name)
    folder = Path(base).expanduser().resolve() if base is not None else Path.cwd()
    return _build(_JobChecker(doc, lines=False, tools=tools), folder)
