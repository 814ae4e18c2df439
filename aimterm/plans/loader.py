"""Plan files (YAML or JSON) to :class:`~aimterm.plans.spec.Plan` objects, checked before
anything runs.

Two forms are read. aimterm's has a top-level ``plan_id``, ``globals`` and ``steps`` (see
``examples/plans/rename.yaml``); the workstream form has a top-level ``id`` and either
``steps`` or one ``tool`` with its ``tasks`` (a one-step plan named after the workstream),
its ``execution`` giving the concurrency and the step timeout. Keys starting with
``_comment`` are documentation, allowed in any mapping of either form.

``${NAME}`` in any string value is replaced by ``variables[NAME]`` (after parsing, so lines
stay right); a name not given is left as written, as is ``$NAME``: acceptance commands are
shell. Every mistake is one :class:`~aimterm.errors.ConfigError` reading
``path:line: key: what was expected``, the first one met: unknown keys, bad values, duplicate
step ids, dependencies on no step or on the step itself, cycles, unknown tools, and write
scopes of two steps that overlap without a shared ``conflict_group``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any

from aimterm.adapter.yamlfile import (
    MAX_YAML_BYTES,
    KeyPath,
    YamlFile,
    format_key,
    parse_yaml,
    read_yaml_file,
)

# The cluster file's checker: every config file words its mistakes alike.
from aimterm.config import got
from aimterm.errors import ConfigError
from aimterm.jobs.checker import FileChecker, json_tabs
from aimterm.jobs.spec import (
    ID_PATTERN,
    MAX_ACCEPTANCE,
    MAX_ENV,
    MAX_FILES,
    MAX_ID_LENGTH,
    MAX_RETRIES,
)
from aimterm.plans.graph import find_cycle, scopes_overlap
from aimterm.plans.spec import DEFAULT_TIMEOUT_S, MAX_STEPS, ON_FAILURE, Plan, PlanGlobals, Step

__all__ = ["MAX_CONCURRENCY", "load_plan", "load_plan_text", "plan_from_data"]

#: Steps running at once, and the most a plan may ask for.
MAX_CONCURRENCY = 64
#: Tasks of one step; a string's length (one file's worth, ``${VAR}`` values included).
MAX_TASKS = 100
MAX_TEXT = MAX_YAML_BYTES

_ID_RE = re.compile(ID_PATTERN)
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ID_HELP = ("letters, digits, '.', '_' or '-', starting with a letter or digit; at most "
            f"{MAX_ID_LENGTH} characters")
_SHAPE_HELP = ("a plan (plan_id: ..., steps: [...]) or a workstream (id: ..., with steps, or "
               "tool and tasks)")

_PLAN_KEYS = ("plan_id", "version", "description", "metadata", "globals", "steps")
#: Step ids that would clash with the branches and folders of the run itself.
RESERVED_STEP_IDS = frozenset({"integration", "_integration"})
_GLOBALS_KEYS = ("max_concurrency", "default_timeout_sec", "default_retries", "env", "setup")
_STEP_KEYS = ("id", "name", "description", "tool", "prompt", "tasks", "depends_on",
              "files_scope", "conflict_group", "timeout_sec", "retries", "retry_delay_sec",
              "critical", "on_failure", "acceptance_tests", "env", "edits")
_SCOPE_KEYS = ("reads", "writes")
#: The workstream's own keys; those of its one-step form; its ``execution``.
_WS_KEYS = ("id", "openspec_change", "ccpm_issue", "gate", "files_scope", "files_create",
            "steps", "circuit_breaker", "execution", "metadata", "doc_id", "description",
            "depends_on")
_WS_ONE_STEP = ("tool", "tasks", "prompt", "acceptance_tests")
_EXECUTION_KEYS = ("parallel", "max_workers", "timeout_per_step")


def _is_comment(name: object) -> bool:
    return isinstance(name, str) and name.startswith("_comment")


class _PlanChecker(FileChecker):
    def line(self, key: KeyPath) -> int | None:
        return self.doc.line(key) if self.lines else None

    def mapping(self, value: Any, key: KeyPath, allowed: tuple[str, ...]) -> dict[str, Any]:
        """The mapping without its ``_comment`` keys, every other key one of ``allowed``."""
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if not _is_comment(k)}
        return super().mapping(value, key, allowed)

    def string(self, value: Any, key: KeyPath) -> str:
        text = super().string(value, key)
        if len(text) > MAX_TEXT:
            raise self.fail(key, f"expected at most {MAX_TEXT} characters, got {len(text)}")
        return text

    def ident(self, value: Any, key: KeyPath, what: str) -> str:
        if not isinstance(value, str) or not _ID_RE.match(value) or len(value) > MAX_ID_LENGTH:
            raise self.fail(key, f"expected {what} ({_ID_HELP}), got {got(value)}")
        return value

    def prompt(self, text: str, key: KeyPath) -> str:
        # Trailing whitespace never matters to a tool, and a stray newline could submit early.
        text = text.rstrip()
        if not text:
            raise self.fail(key, "expected a prompt, got only whitespace")
        return text

    def seconds(self, value: Any, key: KeyPath, *, positive: bool) -> float:
        if isinstance(value, float) and not math.isfinite(value):  # only from Python data
            raise self.fail(key, f"expected a finite number, got {value}")
        return self.number(value, key, positive=positive)

    def ranged(self, value: Any, key: KeyPath, low: int, high: int) -> int:
        count = self.integer(value, key, low)
        if count > high:
            raise self.fail(key, f"expected an integer from {low} to {high}, got {count}")
        return count

    def boolean(self, value: Any, key: KeyPath) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {got(value)}")
        return value

    def choice(self, value: Any, key: KeyPath, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise self.fail(key, f"expected one of: {', '.join(choices)}; got {got(value)}")
        return str(value)

    def env(self, value: Any, key: KeyPath) -> dict[str, str]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping of names to values, got {got(value)}")
        value = {k: v for k, v in value.items() if not _is_comment(k)}
        if len(value) > MAX_ENV:
            raise self.fail(key, f"expected at most {MAX_ENV} variables, got {len(value)}")
        out = {}
        for name, item in value.items():
            at = key + (name,)
            if not _ENV_RE.match(name):
                raise self.fail(at, "expected a variable name (letters, digits and '_', not "
                                    "starting with a digit)")
            if item is None or not isinstance(item, (str, int, float)):
                raise self.fail(at, f"expected a string, a number, or true/false, "
                                    f"got {got(item)}")
            if isinstance(item, float) and not math.isfinite(item):
                raise self.fail(at, f"expected a finite number, got {item}")
            text = str(item).lower() if isinstance(item, bool) else str(item)
            if "\x00" in text:
                raise self.fail(at, "expected text without NUL characters")
            out[name] = text
        return out

    def label(self, value: Any, key: KeyPath) -> str:
        """Text or a number (a version, an issue), kept as text."""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(key, f"expected a string or a number, got {got(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(key, f"expected a finite number, got {value}")
        return self.string(value, key) if isinstance(value, str) else str(value)

    def scope(self, value: Any, key: KeyPath) -> str:
        """A path or glob relative to the repository, normalized (``./a//b`` is ``a/b``; a
        trailing ``/`` is kept: it says the path is a folder)."""
        text = self.string(value, key)
        if text.startswith("/"):
            raise self.fail(key, f"expected a path relative to the repository, got {text!r}")
        parts = text.split("/")
        if ".." in parts:
            raise self.fail(key, f"expected a path inside the repository (no '..'), "
                                 f"got {text!r}")
        kept = [p for p in parts if p not in ("", ".")]
        if not kept:
            return "."
        return "/".join(kept) + ("/" if text.endswith("/") else "")

    def scopes(self, value: Any, key: KeyPath) -> tuple[str, ...]:
        items = self.bounded(value, key, MAX_FILES, "paths or globs")
        return tuple(self.scope(item, key + (i,)) for i, item in enumerate(items))


def _substitute(value: Any, variables: Mapping[str, str]) -> Any:
    """``${NAME}`` replaced in every string value (keys stay as written)."""
    if isinstance(value, str):
        if "${" not in value:
            return value
        return _VAR_RE.sub(lambda m: str(variables.get(m.group(1), m.group(0))), value)
    if isinstance(value, dict):
        return {name: _substitute(item, variables) for name, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, variables) for item in value]
    return value


class _Reader:
    """One plan being read: the steps so far and where each write scope was written."""

    def __init__(self, c: _PlanChecker) -> None:
        self.c = c
        self.steps: list[Step] = []
        self.keys: list[KeyPath] = []  # where each step is
        self.id_keys: dict[str, KeyPath] = {}
        self.write_keys: list[list[KeyPath]] = []

    def files_scope(self, raw: Any, key: KeyPath, *, lists: bool
                    ) -> tuple[tuple[str, ...], tuple[str, ...], list[KeyPath]]:
        """(reads, writes, the key of each write); ``lists``: a plain list is the writes."""
        c = self.c
        if lists and isinstance(raw, list):
            writes = c.scopes(raw, key)
            return (), writes, [key + (i,) for i in range(len(writes))]
        if not isinstance(raw, dict) and lists:
            raise c.fail(key, f"expected a list of paths or globs, or {{reads: [...], "
                              f"writes: [...]}}, got {got(raw)}")
        scope = c.mapping(raw, key, _SCOPE_KEYS)
        reads = c.scopes(scope["reads"], key + ("reads",)) if "reads" in scope else ()
        writes = c.scopes(scope["writes"], key + ("writes",)) if "writes" in scope else ()
        return reads, writes, [key + ("writes", i) for i in range(len(writes))]

    def step(self, raw: dict[str, Any], key: KeyPath, g: PlanGlobals, *, workstream: bool,
             step_id: str | None = None, allowed: tuple[str, ...] = _STEP_KEYS) -> None:
        c = self.c
        raw = c.mapping(raw, key, allowed)
        if step_id is None:
            if "id" not in raw:
                raise c.fail(key, "missing key 'id' (the step's id)")
            step_id = c.ident(raw["id"], key + ("id",), "a step id")
            id_key = key + ("id",)
        else:
            id_key = key
        if step_id in RESERVED_STEP_IDS or ".." in step_id or step_id.endswith((".", ".lock")):
            # Each step's id names its branch, aimterm/PLAN/STEP, beside the run's own.
            raise c.fail(id_key, f"{step_id!r} cannot name a step (its branch would be "
                                 f"aimterm/PLAN/{step_id}, which git or the run's "
                                 "integration branch takes)")
        if step_id in self.id_keys:
            first = self.id_keys[step_id]
            where = f", line {c.doc.line(first)}" if c.lines else ""
            raise c.fail(id_key, f"duplicate step id {step_id!r} ({format_key(first[:-1])} "
                                 f"has it too{where})")
        self.id_keys[step_id] = id_key
        if "tool" not in raw:
            raise c.fail(key, "missing key 'tool' (the adapter that runs it)")
        kw: dict[str, Any] = {"id": step_id, "tool": c.tool(raw["tool"], key + ("tool",))}
        if "prompt" in raw and "tasks" in raw:
            raise c.fail(key + ("tasks",), "both 'prompt' and 'tasks': give one (tasks are "
                                           "joined into the prompt, one per line)")
        if "prompt" in raw:
            at = key + ("prompt",)
            kw["prompt"] = c.prompt(c.string(raw["prompt"], at), at)
        elif "tasks" in raw:
            at = key + ("tasks",)
            tasks = c.strings(raw["tasks"], at, MAX_TASKS, "tasks")
            if not tasks:
                raise c.fail(at, "expected at least one task, got an empty list")
            kw["prompt"] = c.prompt("\n".join(tasks), at)
        else:
            raise c.fail(key, "missing key 'prompt' or 'tasks' (what the tool is asked to do)")
        for name in ("name", "description"):
            if name in raw:
                kw[name] = c.optional(raw[name], key + (name,))
        if "depends_on" in raw:
            at = key + ("depends_on",)
            deps = c.bounded(raw["depends_on"], at, MAX_STEPS, "step ids")
            seen: set[str] = set()
            for i, dep in enumerate(deps):
                dep = c.ident(dep, at + (i,), "a step id")
                if dep in seen:
                    raise c.fail(at + (i,), f"{dep!r} is listed twice")
                seen.add(dep)
            kw["depends_on"] = tuple(deps)
        writes_at: list[KeyPath] = []
        if "files_scope" in raw:
            kw["reads"], kw["writes"], writes_at = self.files_scope(
                raw["files_scope"], key + ("files_scope",), lists=workstream)
        if "conflict_group" in raw and raw["conflict_group"] is not None:
            kw["conflict_group"] = c.ident(raw["conflict_group"], key + ("conflict_group",),
                                           "a group name")
        kw["timeout_s"] = (c.seconds(raw["timeout_sec"], key + ("timeout_sec",), positive=True)
                           if "timeout_sec" in raw else g.default_timeout_s)
        # An explicit 0 stays 0: only a missing key takes the default.
        kw["retries"] = (c.ranged(raw["retries"], key + ("retries",), 0, MAX_RETRIES)
                         if "retries" in raw else g.default_retries)
        if "retry_delay_sec" in raw:
            kw["retry_delay_s"] = c.seconds(raw["retry_delay_sec"], key + ("retry_delay_sec",),
                                            positive=False)
        for name in ("critical", "edits"):
            if name in raw:
                kw[name] = c.boolean(raw[name], key + (name,))
        if "on_failure" in raw:
            kw["on_failure"] = c.choice(raw["on_failure"], key + ("on_failure",), ON_FAILURE)
        if "acceptance_tests" in raw:
            kw["acceptance"] = c.strings(raw["acceptance_tests"], key + ("acceptance_tests",),
                                         MAX_ACCEPTANCE, "shell commands")
        env = c.env(raw["env"], key + ("env",)) if "env" in raw else {}
        kw["env"] = {**g.env, **env}
        kw["line"] = c.line(key)
        self.add(Step(**kw), key, writes_at)

    def add(self, step: Step, key: KeyPath, writes_at: list[KeyPath]) -> None:
        # Every pair of writes is compared: their number is bounded for the whole plan.
        room = MAX_FILES - sum(len(w) for w in self.write_keys)
        if len(writes_at) > room:
            raise self.c.fail(writes_at[max(room, 0)], f"expected at most {MAX_FILES} write "
                                                       "scopes in the whole plan")
        self.steps.append(step)
        self.keys.append(key)
        self.write_keys.append(writes_at)

    def check(self) -> None:
        """What only the whole plan shows: dependencies, cycles, overlapping writes."""
        c = self.c
        ids = [s.id for s in self.steps]
        known = set(ids)
        listed = ", ".join(ids[:20]) + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "")
        for step, key in zip(self.steps, self.keys, strict=True):
            for i, dep in enumerate(step.depends_on):
                at = key + ("depends_on", i)
                if dep == step.id:
                    raise c.fail(at, f"step {dep!r} depends on itself")
                if dep not in known:
                    raise c.fail(at, f"no step {dep!r} (steps: {listed})")
        cycle = find_cycle({s.id: s.depends_on for s in self.steps})
        if cycle is not None:
            first = self.keys[ids.index(cycle[0])]
            raise ConfigError(f"a cycle: {' -> '.join(cycle)}", path=c.doc.path,
                              line=c.line(first), key=format_key(first[:1]) or "steps")
        for j, later in enumerate(self.steps):
            for wb, at in zip(later.writes, self.write_keys[j], strict=True):
                for i, earlier in enumerate(self.steps[:j]):
                    if later.conflict_group is not None and \
                            later.conflict_group == earlier.conflict_group:
                        continue
                    for wa, first in zip(earlier.writes, self.write_keys[i], strict=True):
                        if scopes_overlap(wa, wb):
                            where = f" (line {c.doc.line(first)})" if c.lines else ""
                            raise c.fail(at, f"{wb!r} overlaps {wa!r} of step {earlier.id}"
                                             f"{where}: give both the same conflict_group")


def _plan_form(c: _PlanChecker, data: dict[str, Any]) -> tuple[Plan, _Reader]:
    top = c.mapping(data, (), _PLAN_KEYS)
    plan_id = c.ident(top["plan_id"], ("plan_id",), "a plan id")
    if "steps" not in top:
        raise c.fail((), "missing key 'steps' (the plan's steps)")
    kw: dict[str, Any] = {"id": plan_id}
    if "version" in top:
        kw["version"] = c.label(top["version"], ("version",))
    if "description" in top:
        kw["description"] = c.optional(top["description"], ("description",))
    if "metadata" in top:
        c.free(top["metadata"], ("metadata",))
    g = PlanGlobals()
    if "globals" in top:
        raw = c.mapping(top["globals"], ("globals",), _GLOBALS_KEYS)
        at: KeyPath = ("globals",)
        g = PlanGlobals(
            max_concurrency=c.ranged(raw["max_concurrency"], at + ("max_concurrency",), 1,
                                     MAX_CONCURRENCY) if "max_concurrency" in raw else 1,
            default_timeout_s=c.seconds(raw["default_timeout_sec"], at + ("default_timeout_sec",),
                                        positive=True)
            if "default_timeout_sec" in raw else DEFAULT_TIMEOUT_S,
            default_retries=c.ranged(raw["default_retries"], at + ("default_retries",), 0,
                                     MAX_RETRIES) if "default_retries" in raw else 0,
            env=c.env(raw["env"], at + ("env",)) if "env" in raw else {},
            setup=c.string(raw["setup"], at + ("setup",)) if "setup" in raw else None)
    reader = _Reader(c)
    for key, item in _step_list(c, top["steps"]):
        reader.step(item, key, g, workstream=False)
    return Plan(steps=tuple(reader.steps), globals=g, **kw), reader


def _step_list(c: _PlanChecker, raw: Any) -> list[tuple[KeyPath, dict[str, Any]]]:
    items = c.bounded(raw, ("steps",), MAX_STEPS, "steps")
    if not items:
        raise c.fail(("steps",), "expected at least one step, got an empty list")
    out: list[tuple[KeyPath, dict[str, Any]]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise c.fail(("steps", i), f"expected a step (a mapping), got {got(item)}")
        out.append((("steps", i), item))
    return out


def _workstream_form(c: _PlanChecker, data: dict[str, Any]) -> tuple[Plan, _Reader]:
    top = c.mapping(data, (), _WS_KEYS + _WS_ONE_STEP)
    ws_id = c.ident(top["id"], ("id",), "a workstream id")
    kw: dict[str, Any] = {"id": ws_id}
    if "description" in top:
        kw["description"] = c.optional(top["description"], ("description",))
    for name in ("openspec_change", "doc_id", "ccpm_issue"):
        if name in top:
            c.label(top[name], (name,))
    for name in ("metadata", "circuit_breaker"):
        if name in top:
            c.free(top[name], (name,))
    if "gate" in top:
        c.data(top["gate"], ("gate",))
    if "depends_on" in top:
        # Other workstreams: a plan file cannot see them, so they are checked, not applied.
        at: KeyPath = ("depends_on",)
        for i, item in enumerate(c.bounded(top["depends_on"], at, MAX_STEPS, "workstream ids")):
            c.ident(item, at + (i,), "a workstream id")
    parallel, workers, timeout = True, min(os.cpu_count() or 1, MAX_CONCURRENCY), None
    if "execution" in top:
        raw = c.mapping(top["execution"], ("execution",), _EXECUTION_KEYS)
        at = ("execution",)
        if "parallel" in raw:
            parallel = c.boolean(raw["parallel"], at + ("parallel",))
        if "max_workers" in raw:
            workers = c.ranged(raw["max_workers"], at + ("max_workers",), 1, MAX_CONCURRENCY)
        if "timeout_per_step" in raw:
            timeout = c.seconds(raw["timeout_per_step"], at + ("timeout_per_step",),
                                positive=True)
    g = PlanGlobals(max_concurrency=workers if parallel else 1,
                    default_timeout_s=timeout if timeout is not None else DEFAULT_TIMEOUT_S)
    reader = _Reader(c)
    if "steps" in top:
        for name in _WS_ONE_STEP:
            if name in top:
                raise c.fail((name,), f"{name!r} beside 'steps': a workstream has steps, or "
                                      "one tool with its tasks")
        for name in ("files_scope", "files_create"):
            if name in top:  # the whole workstream's: each step says its own
                reader.files_scope(top[name], (name,), lists=True)
        for key, item in _step_list(c, top["steps"]):
            reader.step(item, key, g, workstream=True)
    elif "tool" in top or "tasks" in top or "prompt" in top:
        # One step, named after the workstream, writing what the workstream says it writes.
        one = {k: v for k, v in top.items() if k in _WS_ONE_STEP}
        reads: tuple[str, ...] = ()
        writes: tuple[str, ...] = ()
        at_keys: list[KeyPath] = []
        for name in ("files_scope", "files_create"):
            if name in top:
                more_reads, more_writes, more_keys = reader.files_scope(top[name], (name,),
                                                                        lists=True)
                reads, writes = reads + more_reads, writes + more_writes
                at_keys += more_keys
        reader.step(one, (), g, workstream=True, step_id=ws_id, allowed=_WS_ONE_STEP)
        step = replace(reader.steps.pop(), reads=reads, writes=writes)
        reader.keys.pop()
        reader.write_keys.pop()
        reader.add(step, (), at_keys)
    else:
        raise c.fail((), "missing key 'steps', or 'tool' and 'tasks' (what the workstream "
                         "does)")
    return Plan(steps=tuple(reader.steps), globals=g, **kw), reader


def _build(c: _PlanChecker, variables: Mapping[str, str], source: str | None) -> Plan:
    data = _substitute(c.clean(c.doc.data, ()), variables)
    if data is None:
        raise c.fail((), f"empty plan file: expected {_SHAPE_HELP}")
    if not isinstance(data, dict):
        raise c.fail((), f"expected {_SHAPE_HELP}, got {got(data)}")
    if "plan_id" in data:
        plan, reader = _plan_form(c, data)
    elif "id" in data:
        plan, reader = _workstream_form(c, data)
    else:
        raise c.fail((), f"missing key 'plan_id' (aimterm's form) or 'id' (a workstream): "
                         f"expected {_SHAPE_HELP}")
    reader.check()
    return Plan(id=plan.id, steps=plan.steps, globals=plan.globals, version=plan.version,
                description=plan.description, source=source, variables=dict(variables))


def load_plan_text(text: str, name: str, *, variables: Mapping[str, str] | None = None,
                   tools: Collection[str] | None = None) -> Plan:
    """The plan in ``text`` (YAML or JSON), shown as ``name`` in messages and kept as its
    ``source``. ``variables`` fill ``${NAME}``; with ``tools``, every step's tool must be one
    of them. Raises :class:`~aimterm.errors.ConfigError`."""
    doc = parse_yaml(json_tabs(text), name)  # bounded: size, depth, aliases
    return _build(_PlanChecker(doc, lines=True, tools=tools), variables or {}, name)


def load_plan(path: str | os.PathLike[str], *, variables: Mapping[str, str] | None = None,
              tools: Collection[str] | None = None) -> Plan:
    """The plan in the file at ``path``."""
    shown = os.fspath(path)
    text = read_yaml_file(shown, "plan file")  # never more than 1 MiB is read
    return load_plan_text(text, shown, variables=variables, tools=tools)


def plan_from_data(data: Any, name: str = "<plan>", *,
                   variables: Mapping[str, str] | None = None,
                   tools: Collection[str] | None = None) -> Plan:
    """A plan from plain data (built in Python, or parsed JSON), checked like a file; its
    messages have no line, its steps no ``line`` and it has no ``source``."""
    doc = YamlFile(data=data, lines={(): 1}, path=name)
    return _build(_PlanChecker(doc, lines=False, tools=tools), variables or {}, None)
