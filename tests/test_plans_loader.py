"""Plan files to Plans: both forms, ${VAR}, defaults, and every mistake's exact message."""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from aimterm.errors import ConfigError
from aimterm.plans.graph import PlanGraph
from aimterm.plans.loader import MAX_CONCURRENCY, MAX_TEXT, load_plan, load_plan_text, plan_from_data
from aimterm.plans.spec import DEFAULT_TIMEOUT_S, MAX_STEPS, Plan, PlanGlobals, Step

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "plans"


def write(tmp_path: Path, text: str, name: str = "plan.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, **kw: Any) -> Plan:
    return load_plan(write(tmp_path, text), **kw)


def error(tmp_path: Path, text: str, **kw: Any) -> str:
    """The message, the file's path shown as P."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_plan(path, **kw)
    return str(info.value).replace(str(path), "P")


def data_error(data: Any, **kw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        plan_from_data(data, **kw)
    return str(info.value)


TWO = """
plan_id: p
steps:
  - id: a
    tool: demo
    prompt: do a
  - id: b
    tool: demo
    prompt: do b
    depends_on: [a]
"""


# -- aimterm's form ---------------------------------------------------------------------------

def test_full_plan(tmp_path: Path) -> None:
    p = load(tmp_path, """
        plan_id: rename-all
        version: 2
        description: rename things
        metadata: {owner: me, tags: [x]}
        globals:
          max_concurrency: 4
          default_timeout_sec: 90
          default_retries: 2
          env: {LANG: C, DEBUG: true, N: 3}
        steps:
          - id: a
            name: first
            description: the first
            tool: demo
            prompt: "edit a.py: x = 1  \\n"
            files_scope: {reads: [docs/], writes: ["./src//a.py", src/pkg/]}
            conflict_group: src
            timeout_sec: 60
            retries: 3
            retry_delay_sec: 1.5
            critical: false
            on_failure: skip_dependents
            acceptance_tests: ["pytest -q"]
            env: {LANG: en_US.UTF-8, EXTRA: "1"}
            edits: false
          - id: b
            tool: demo
            tasks: [one, two]
            depends_on: [a]
        """, tools=["demo", "claude"])
    assert p.id == "rename-all"
    assert p.version == "2"
    assert p.description == "rename things"
    assert p.globals == PlanGlobals(max_concurrency=4, default_timeout_s=90.0,
                                    default_retries=2,
                                    env={"LANG": "C", "DEBUG": "true", "N": "3"})
    assert p.source == str(tmp_path / "plan.yaml")
    a, b = p.steps
    assert a == Step(id="a", tool="demo", prompt="edit a.py: x = 1", reads=("docs/",),
                     writes=("src/a.py", "src/pkg/"), conflict_group="src", timeout_s=60.0,
                     retries=3, retry_delay_s=1.5, critical=False, on_failure="skip_dependents",
                     acceptance=("pytest -q",),
                     env={"LANG": "en_US.UTF-8", "DEBUG": "true", "N": "3", "EXTRA": "1"},
                     edits=False, name="first", description="the first", line=11)
    assert b.prompt == "one\ntwo"
    assert b.depends_on == ("a",)
    assert (b.timeout_s, b.retries, b.edits, b.critical, b.on_failure) == (
        90.0, 2, True, True, "abort")
    assert b.env == {"LANG": "C", "DEBUG": "true", "N": "3"}
    assert b.line == 26


def test_defaults(tmp_path: Path) -> None:
    p = load(tmp_path, TWO)
    assert p.globals == PlanGlobals()
    assert p.version is None and p.description is None
    assert p.steps[0].timeout_s == DEFAULT_TIMEOUT_S
    assert p.steps[0].retries == 0
    assert (p.steps[0].line, p.steps[1].line) == (3, 6)


def test_explicit_zero_retries_stays_zero(tmp_path: Path) -> None:
    p = load(tmp_path, """
        plan_id: p
        globals: {default_retries: 3}
        steps:
          - {id: a, tool: demo, prompt: x, retries: 0}
          - {id: b, tool: demo, prompt: x}
        """)
    assert [s.retries for s in p.steps] == [0, 3]


def test_comment_keys_are_skipped_anywhere(tmp_path: Path) -> None:
    p = load(tmp_path, """
        _comment: about the plan
        plan_id: p
        globals: {_comment_why: "two at once", max_concurrency: 2, env: {_comment: x, A: b}}
        steps:
          - id: a
            _comment: about a
            tool: demo
            prompt: x
            files_scope: {_comment: scope, writes: [a.py]}
        """)
    assert p.globals.max_concurrency == 2
    assert p.globals.env == {"A": "b"}
    assert p.steps[0].writes == ("a.py",)


def test_json_with_tabs(tmp_path: Path) -> None:
    text = json.dumps({"plan_id": "p", "steps": [{"id": "a", "tool": "demo", "prompt": "x"}]},
                      indent="\t")
    path = tmp_path / "plan.json"
    path.write_text(text, encoding="utf-8")
    assert load_plan(path).steps[0].id == "a"


def test_to_dict_loads_back() -> None:
    text = textwrap.dedent(TWO)
    p = load_plan_text(text, "t.yaml", variables={"X": "y"})
    again = plan_from_data(p.to_dict())
    assert again == replace(p, source=None, variables={},
                            steps=tuple(replace(s, line=None) for s in p.steps))


def test_load_plan_text_and_data() -> None:
    p = load_plan_text(textwrap.dedent(TWO), "<stdin>")
    assert p.source == "<stdin>"
    d = plan_from_data({"plan_id": "p", "steps": [{"id": "a", "tool": "demo", "prompt": "x"}]})
    assert d.source is None
    assert d.steps[0].line is None


# -- ${VAR} -----------------------------------------------------------------------------------

def test_variables(tmp_path: Path) -> None:
    p = load(tmp_path, """
        plan_id: rename-${TARGET}
        steps:
          - id: a
            tool: demo
            prompt: "rename ${OLD} to ${TARGET} in ${FILE}"
            acceptance_tests: ['test "$HOME" && echo ${HOME} $TARGET']
            files_scope: {writes: ["src/${TARGET}.py"]}
            env: {NAME: "${TARGET}"}
        """, variables={"TARGET": "load", "OLD": "fetch"})
    step = p.steps[0]
    assert p.id == "rename-load"
    assert step.prompt == "rename fetch to load in ${FILE}"  # unknown: left as written
    assert step.acceptance == ('test "$HOME" && echo ${HOME} $TARGET',)  # $NAME: untouched
    assert step.writes == ("src/load.py",)
    assert step.env == {"NAME": "load"}
    assert p.variables == {"TARGET": "load", "OLD": "fetch"}


def test_a_substituted_value_is_checked_at_its_line(tmp_path: Path) -> None:
    assert error(tmp_path, """
        plan_id: p
        steps:
          - id: "${ID}"
            tool: demo
            prompt: x
        """, variables={"ID": "has space"}) == (
        "P:3: steps[0].id: expected a step id (letters, digits, '.', '_' or '-', starting with "
        "a letter or digit; at most 128 characters), got string 'has space'")


# -- the workstream form ----------------------------------------------------------------------

def test_workstream_with_steps(tmp_path: Path) -> None:
    path = write(tmp_path, """
        {
          "id": "ws-rename",
          "openspec_change": "rename",
          "ccpm_issue": 42,
          "gate": 1,
          "doc_id": "DOC-1",
          "description": "rename it",
          "files_scope": ["src/**"],
          "files_create": ["src/new.py"],
          "circuit_breaker": {"max_failures": 3},
          "metadata": {"x": 1},
          "execution": {"parallel": true, "max_workers": 3, "timeout_per_step": 600},
          "_comment": "documentation",
          "steps": [
            {"id": "a", "description": "first", "tool": "demo", "tasks": ["t1", "t2"],
             "files_scope": ["src/a.py"], "acceptance_tests": ["true"]},
            {"id": "b", "tool": "demo", "tasks": ["t3"], "depends_on": ["a"],
             "retries": 1, "timeout_sec": 5}
          ]
        }
        """, "ws.json")
    p = load_plan(path, tools=["demo"])
    assert p.id == "ws-rename"
    assert p.description == "rename it"
    assert p.globals == PlanGlobals(max_concurrency=3, default_timeout_s=600.0)
    a, b = p.steps
    assert (a.prompt, a.writes, a.acceptance, a.timeout_s, a.description) == (
        "t1\nt2", ("src/a.py",), ("true",), 600.0, "first")
    assert (b.prompt, b.depends_on, b.retries, b.timeout_s) == ("t3", ("a",), 1, 5.0)
    assert a.line == 15


def test_workstream_execution_defaults() -> None:
    steps = [{"id": "a", "tool": "demo", "tasks": ["x"]}]
    p = plan_from_data({"id": "ws", "steps": steps})
    assert p.globals.max_concurrency == min(os.cpu_count() or 1, MAX_CONCURRENCY)
    assert p.globals.default_timeout_s == DEFAULT_TIMEOUT_S
    serial = plan_from_data({"id": "ws", "steps": steps,
                             "execution": {"parallel": False, "max_workers": 8}})
    assert serial.globals.max_concurrency == 1


def test_single_step_workstream(tmp_path: Path) -> None:
    p = load(tmp_path, """
        id: ws-one
        tool: demo
        tasks:
          - "edit a.py: x = 1"
          - "edit b.py: y = 2"
        acceptance_tests: ["python3 -c 'import a'"]
        depends_on: [ws-zero]
        files_scope: [a.py]
        files_create: [b.py]
        execution: {timeout_per_step: 30}
        """)
    (step,) = p.steps
    assert step.id == "ws-one"
    assert step.prompt == "edit a.py: x = 1\nedit b.py: y = 2"
    assert step.acceptance == ("python3 -c 'import a'",)
    assert step.depends_on == ()  # other workstreams: checked, not applied
    assert step.writes == ("a.py", "b.py")
    assert step.timeout_s == 30.0
    assert step.line == 1


@pytest.mark.parametrize(("text", "message"), [
    ("id: ws\nsteps: [{id: a, tool: demo, tasks: [x]}]\ntool: demo\n",
     "P:3: tool: 'tool' beside 'steps': a workstream has steps, or one tool with its tasks"),
    ("id: ws\ndescription: x\n",
     "P:1: missing key 'steps', or 'tool' and 'tasks' (what the workstream does)"),
    ("id: ws\ntool: demo\n",
     "P:1: missing key 'prompt' or 'tasks' (what the tool is asked to do)"),
    ("id: ws\ntool: demo\ntasks: []\n",
     "P:3: tasks: expected at least one task, got an empty list"),
    ("id: ws\ntool: demo\ntasks: [x]\nexecution: {parallel: 1}\n",
     "P:4: execution.parallel: expected true or false, got integer 1"),
    ("id: ws\ntool: demo\ntasks: [x]\nexecution: {max_workers: 65}\n",
     "P:4: execution.max_workers: expected an integer from 1 to 64, got 65"),
    ("id: ws\ntool: demo\ntasks: [x]\nexecution: {timeout_per_step: 0}\n",
     "P:4: execution.timeout_per_step: expected a number > 0, got 0"),
    ("id: ws\ntool: demo\ntasks: [x]\nexecution: {workers: 2}\n",
     "P:4: execution.workers: unknown key 'workers' (expected one of: max_workers, parallel, "
     "timeout_per_step)"),
    ("id: ws\ntool: demo\ntasks: [x]\nfiles_scope: /etc\n",
     "P:4: files_scope: expected a list of paths or globs, or {reads: [...], writes: [...]}, "
     "got string '/etc'"),
    ("id: ws\ntool: demo\ntasks: [x]\nfiles_create: [../x]\n",
     "P:4: files_create[0]: expected a path inside the repository (no '..'), got '../x'"),
    ("id: ws\ntool: demo\ntasks: [x]\ndepends_on: [bad id]\n",
     "P:4: depends_on[0]: expected a workstream id (letters, digits, '.', '_' or '-', starting "
     "with a letter or digit; at most 128 characters), got string 'bad id'"),
    ("id: ws\ntool: demo\ntasks: [x]\ntimeout_sec: 4\n",
     "P:4: timeout_sec: unknown key 'timeout_sec' (expected one of: acceptance_tests, "
     "ccpm_issue, circuit_breaker, depends_on, description, doc_id, execution, files_create, "
     "files_scope, gate, id, metadata, openspec_change, prompt, steps, tasks, tool)"),
])
def test_workstream_mistakes(tmp_path: Path, text: str, message: str) -> None:
    assert error(tmp_path, text) == message


# -- mistakes, each with its message and line ------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("", "P:1: empty plan file: expected a plan (plan_id: ..., steps: [...]) or a workstream "
         "(id: ..., with steps, or tool and tasks)"),
    ("- a\n", "P:1: expected a plan (plan_id: ..., steps: [...]) or a workstream (id: ..., "
              "with steps, or tool and tasks), got a list"),
    ("steps: []\n", "P:1: missing key 'plan_id' (aimterm's form) or 'id' (a workstream): "
                    "expected a plan (plan_id: ..., steps: [...]) or a workstream (id: ..., "
                    "with steps, or tool and tasks)"),
    ("plan_id: p\n", "P:1: missing key 'steps' (the plan's steps)"),
    ("plan_id: p\nsteps: []\n", "P:2: steps: expected at least one step, got an empty list"),
    ("plan_id: p\nsteps: {}\n", "P:2: steps: expected a list of steps, got a mapping"),
    ("plan_id: p\nsteps: [x]\n", "P:2: steps[0]: expected a step (a mapping), got string 'x'"),
    ("plan_id: p/q\nsteps: []\n",
     "P:1: plan_id: expected a plan id (letters, digits, '.', '_' or '-', starting with a "
     "letter or digit; at most 128 characters), got string 'p/q'"),
    ("plan_id: p\nversion: true\nsteps: []\n",
     "P:2: version: expected a string or a number, got boolean true"),
    ("plan_id: p\nmetadata: [1]\nsteps: []\n", "P:2: metadata: expected a mapping, got a list"),
    ("plan_id: p\nmetadata: {when: 2025-11-21}\nsteps: []\n",
     "P:2: metadata.when: expected JSON data (text, numbers, true/false, null, lists, "
     "mappings), got date 2025-11-21; quote it"),
    ("plan_id: p\nsteps: []\nextra: 1\n",
     "P:3: extra: unknown key 'extra' (expected one of: description, globals, metadata, "
     "plan_id, steps, version)"),
    ("plan_id: p\nglobals: {max_concurrency: 0}\nsteps: []\n",
     "P:2: globals.max_concurrency: expected an integer >= 1, got 0"),
    ("plan_id: p\nglobals: {max_concurrency: 65}\nsteps: []\n",
     "P:2: globals.max_concurrency: expected an integer from 1 to 64, got 65"),
    ("plan_id: p\nglobals: {max_concurrency: 2.5}\nsteps: []\n",
     "P:2: globals.max_concurrency: expected an integer, got number 2.5"),
    ("plan_id: p\nglobals: {default_timeout_sec: 0}\nsteps: []\n",
     "P:2: globals.default_timeout_sec: expected a number > 0, got 0"),
    ("plan_id: p\nglobals: {default_timeout_sec: 9999999999}\nsteps: []\n",
     "P:2: globals.default_timeout_sec: expected a number <= 2592000 (30 days in seconds), "
     "got 1e+10"),
    ("plan_id: p\nglobals: {default_retries: 11}\nsteps: []\n",
     "P:2: globals.default_retries: expected an integer from 0 to 10, got 11"),
    ("plan_id: p\nglobals:\n  env:\n    1BAD: x\nsteps: []\n",
     "P:4: globals.env.1BAD: expected a variable name (letters, digits and '_', not starting "
     "with a digit)"),
    ("plan_id: p\nglobals:\n  env: {A: [1]}\nsteps: []\n",
     "P:3: globals.env.A: expected a string, a number, or true/false, got a list"),
    ("plan_id: p\nglobals: {env: [A]}\nsteps: []\n",
     "P:2: globals.env: expected a mapping of names to values, got a list"),
    ("plan_id: p\nglobals: {workers: 1}\nsteps: []\n",
     "P:2: globals.workers: unknown key 'workers' (expected one of: default_retries, "
     "default_timeout_sec, env, max_concurrency, setup)"),
])
def test_plan_mistakes(tmp_path: Path, text: str, message: str) -> None:
    assert error(tmp_path, text) == message


STEP = "plan_id: p\nsteps:\n  - id: a\n    tool: demo\n"  # the step's keys go on line 5


@pytest.mark.parametrize(("rest", "message"), [
    ("", "P:3: steps[0]: missing key 'prompt' or 'tasks' (what the tool is asked to do)"),
    ("    prompt: x\n    tasks: [y]\n",
     "P:6: steps[0].tasks: both 'prompt' and 'tasks': give one (tasks are joined into the "
     "prompt, one per line)"),
    ("    prompt: '  '\n", "P:5: steps[0].prompt: expected a prompt, got only whitespace"),
    ("    prompt: ''\n", "P:5: steps[0].prompt: expected a non-empty string, got string ''"),
    ("    prompt: \"a\\0b\"\n", "P:5: steps[0].prompt: expected text without NUL characters"),
    ("    tasks: x\n", "P:5: steps[0].tasks: expected a list of tasks, got string 'x'"),
    ("    tasks: [x, 2]\n", "P:5: steps[0].tasks[1]: expected a non-empty string, "
                            "got integer 2"),
    ("    prompt: x\n    timeout_sec: 0\n",
     "P:6: steps[0].timeout_sec: expected a number > 0, got 0"),
    ("    prompt: x\n    timeout_sec: '5'\n",
     "P:6: steps[0].timeout_sec: expected a number, got string '5'"),
    ("    prompt: x\n    retries: 11\n",
     "P:6: steps[0].retries: expected an integer from 0 to 10, got 11"),
    ("    prompt: x\n    retries: -1\n",
     "P:6: steps[0].retries: expected an integer >= 0, got -1"),
    ("    prompt: x\n    retry_delay_sec: -1\n",
     "P:6: steps[0].retry_delay_sec: expected a number >= 0, got -1"),
    ("    prompt: x\n    critical: yes please\n",
     "P:6: steps[0].critical: expected true or false, got string 'yes please'"),
    ("    prompt: x\n    edits: 0\n",
     "P:6: steps[0].edits: expected true or false, got integer 0"),
    ("    prompt: x\n    on_failure: retry\n",
     "P:6: steps[0].on_failure: expected one of: abort, skip_dependents, continue; "
     "got string 'retry'"),
    ("    prompt: x\n    conflict_group: 'a b'\n",
     "P:6: steps[0].conflict_group: expected a group name (letters, digits, '.', '_' or '-', "
     "starting with a letter or digit; at most 128 characters), got string 'a b'"),
    ("    prompt: x\n    acceptance_tests: pytest\n",
     "P:6: steps[0].acceptance_tests: expected a list of shell commands, got string 'pytest'"),
    ("    prompt: x\n    acceptance_tests: [" + ", ".join(["t"] * 33) + "]\n",
     "P:6: steps[0].acceptance_tests[32]: expected at most 32 shell commands, got 33"),
    ("    prompt: x\n    files_scope: [a.py]\n",
     "P:6: steps[0].files_scope: expected a mapping, got a list"),
    ("    prompt: x\n    files_scope: {write: [a.py]}\n",
     "P:6: steps[0].files_scope.write: unknown key 'write' (expected one of: reads, writes)"),
    ("    prompt: x\n    files_scope: {writes: [/etc/passwd]}\n",
     "P:6: steps[0].files_scope.writes[0]: expected a path relative to the repository, "
     "got '/etc/passwd'"),
    ("    prompt: x\n    files_scope: {reads: [src/../../x]}\n",
     "P:6: steps[0].files_scope.reads[0]: expected a path inside the repository (no '..'), "
     "got 'src/../../x'"),
    ("    prompt: x\n    depends_on: a\n",
     "P:6: steps[0].depends_on: expected a list of step ids, got string 'a'"),
    ("    prompt: x\n    depends_on: [b, b]\n",
     "P:6: steps[0].depends_on[1]: 'b' is listed twice"),
    ("    prompt: x\n    env: {A=B: x}\n",
     "P:6: steps[0].env.A=B: expected a variable name (letters, digits and '_', not "
     "starting with a digit)"),
    ("    prompt: x\n    nme: x\n",
     "P:6: steps[0].nme: unknown key 'nme' (expected one of: acceptance_tests, conflict_group, "
     "critical, depends_on, description, edits, env, files_scope, id, name, on_failure, "
     "prompt, retries, retry_delay_sec, tasks, timeout_sec, tool)"),
])
def test_step_mistakes(tmp_path: Path, rest: str, message: str) -> None:
    assert error(tmp_path, STEP + rest) == message


def test_missing_id_and_tool(tmp_path: Path) -> None:
    assert error(tmp_path, "plan_id: p\nsteps:\n  - tool: demo\n    prompt: x\n") == (
        "P:3: steps[0]: missing key 'id' (the step's id)")
    assert error(tmp_path, "plan_id: p\nsteps:\n  - id: a\n    prompt: x\n") == (
        "P:3: steps[0]: missing key 'tool' (the adapter that runs it)")
    assert error(tmp_path, "plan_id: p\nsteps:\n  - {id: a, tool: Demo, prompt: x}\n") == (
        "P:3: steps[0].tool: expected an adapter name (lowercase letters, digits, '.', '_' or "
        "'-'), got string 'Demo'")


def test_too_many_steps() -> None:
    steps = [{"id": f"s{i}", "tool": "demo", "prompt": "x"} for i in range(MAX_STEPS + 1)]
    assert data_error({"plan_id": "p", "steps": steps}) == (
        f"<plan>: steps[{MAX_STEPS}]: expected at most {MAX_STEPS} steps, got {MAX_STEPS + 1}")


def test_too_many_writes_in_all() -> None:
    steps = [{"id": f"s{i}", "tool": "demo", "prompt": "x",
              "files_scope": {"writes": [f"d{i}/f{j}" for j in range(300)]}} for i in range(4)]
    assert data_error({"plan_id": "p", "steps": steps}) == (
        "<plan>: steps[3].files_scope.writes[100]: expected at most 1000 write scopes in the "
        "whole plan")


def test_too_long_text() -> None:
    steps = [{"id": "a", "tool": "demo", "prompt": "x" * (MAX_TEXT + 1)}]
    assert data_error({"plan_id": "p", "steps": steps}) == (
        f"<plan>: steps[0].prompt: expected at most {MAX_TEXT} characters, got {MAX_TEXT + 1}")


def test_json_surrogate_pairs_are_joined(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"plan_id": "p", "steps": [{"id": "a", "tool": "demo", '
                    '"prompt": "smile \\ud83d\\ude00"}]}', encoding="utf-8")
    assert load_plan(path).steps[0].prompt == "smile \U0001f600"


def test_workstream_scopes_are_checked_even_with_steps(tmp_path: Path) -> None:
    assert error(tmp_path, """
        id: ws
        files_scope: [/abs]
        steps:
          - {id: a, tool: demo, tasks: [x], files_scope: {reads: [r], writes: [w]}}
        """) == "P:2: files_scope[0]: expected a path relative to the repository, got '/abs'"
    p = load(tmp_path, """
        id: ws
        files_scope: [src/**]
        steps:
          - {id: a, tool: demo, tasks: [x], files_scope: {reads: [r], writes: [w]}}
          - {id: b, tool: demo, tasks: [x]}
        """)
    assert [(s.reads, s.writes) for s in p.steps] == [(("r",), ("w",)), ((), ())]


def test_unknown_tool(tmp_path: Path) -> None:
    text = "plan_id: p\nsteps:\n  - {id: a, tool: demo, prompt: x}\n  - {id: b, tool: foo, " \
           "prompt: x}\n"
    assert error(tmp_path, text, tools=["demo", "claude"]) == (
        "P:4: steps[1].tool: no adapter named 'foo' (expected one of: claude, demo)")
    assert error(tmp_path, text, tools=[]) == (
        "P:3: steps[0].tool: no adapter named 'demo' (expected one of: none)")
    assert len(load(tmp_path, text).steps) == 2  # tools=None: not checked


def test_duplicate_step_ids(tmp_path: Path) -> None:
    assert error(tmp_path, """
        plan_id: p
        steps:
          - {id: a, tool: demo, prompt: x}
          - {id: b, tool: demo, prompt: x}
          - {id: a, tool: demo, prompt: x}
        """) == "P:5: steps[2].id: duplicate step id 'a' (steps[0] has it too, line 3)"


def test_dependency_on_no_step(tmp_path: Path) -> None:
    assert error(tmp_path, """
        plan_id: p
        steps:
          - {id: a, tool: demo, prompt: x}
          - {id: b, tool: demo, prompt: x}
          - id: c
            tool: demo
            prompt: x
            depends_on: [a, x]
        """) == "P:8: steps[2].depends_on[1]: no step 'x' (steps: a, b, c)"


def test_dependency_on_itself(tmp_path: Path) -> None:
    assert error(tmp_path, """
        plan_id: p
        steps:
          - id: a
            tool: demo
            prompt: x
            depends_on:
              - a
        """) == "P:7: steps[0].depends_on[0]: step 'a' depends on itself"


def test_cycle(tmp_path: Path) -> None:
    assert error(tmp_path, """
        plan_id: p
        steps:
          - {id: z, tool: demo, prompt: x}
          - {id: a, tool: demo, prompt: x, depends_on: [b]}
          - {id: b, tool: demo, prompt: x, depends_on: [c, z]}
          - {id: c, tool: demo, prompt: x, depends_on: [a]}
        """) == "P:4: steps: a cycle: a -> b -> c -> a"


def test_cycle_without_lines() -> None:
    steps = [{"id": "b", "tool": "demo", "prompt": "x", "depends_on": ["a"]},
             {"id": "a", "tool": "demo", "prompt": "x", "depends_on": ["b"]}]
    assert data_error({"plan_id": "p", "steps": steps}) == "<plan>: steps: a cycle: b -> a -> b"


OVERLAPPING = """
plan_id: p
steps:
  - id: a
    tool: demo
    prompt: x
    files_scope:
      writes: [docs/x.md, src/a.py]
  - id: b
    tool: demo
    prompt: x
    files_scope: {writes: [docs/y.md]}
  - id: c
    tool: demo
    prompt: x
  - id: d
    tool: demo
    prompt: x
    files_scope:
      writes: ["src/**"]
"""


def test_overlapping_writes(tmp_path: Path) -> None:
    assert error(tmp_path, OVERLAPPING) == (
        "P:19: steps[3].files_scope.writes[0]: 'src/**' overlaps 'src/a.py' of step a "
        "(line 7): give both the same conflict_group")


def test_overlapping_writes_in_one_group_are_fine(tmp_path: Path) -> None:
    text = OVERLAPPING.replace("    prompt: x\n    files_scope:\n      writes: [docs",
                               "    prompt: x\n    conflict_group: src\n    files_scope:\n"
                               "      writes: [docs")
    text = text.replace('writes: ["src/**"]', 'writes: ["src/**"]\n    conflict_group: src')
    p = load(tmp_path, text)
    assert [s.conflict_group for s in p.steps] == ["src", None, None, "src"]


def test_overlap_needs_the_same_group_not_any_group() -> None:
    steps = [{"id": "a", "tool": "demo", "prompt": "x", "conflict_group": "one",
              "files_scope": {"writes": ["src"]}},
             {"id": "b", "tool": "demo", "prompt": "x", "conflict_group": "two",
              "files_scope": {"writes": ["src/b/"]}}]
    assert data_error({"plan_id": "p", "steps": steps}) == (
        "<plan>: steps[1].files_scope.writes[0]: 'src/b/' overlaps 'src' of step a: give both "
        "the same conflict_group")


def test_reads_never_conflict() -> None:
    steps = [{"id": "a", "tool": "demo", "prompt": "x", "files_scope": {"reads": ["**"]}},
             {"id": "b", "tool": "demo", "prompt": "x", "files_scope": {"writes": ["a.py"]}},
             {"id": "c", "tool": "demo", "prompt": "x", "files_scope": {"reads": ["a.py"]}}]
    assert len(plan_from_data({"plan_id": "p", "steps": steps}).steps) == 3


def test_workstream_step_scopes_overlap(tmp_path: Path) -> None:
    assert error(tmp_path, """
        id: ws
        steps:
          - {id: a, tool: demo, tasks: [x], files_scope: [src/]}
          - {id: b, tool: demo, tasks: [x], files_scope: [src/a.py]}
        """) == ("P:4: steps[1].files_scope[0]: 'src/a.py' overlaps 'src/' of step a (line 3): "
                 "give both the same conflict_group")


def test_python_data_messages_have_no_line() -> None:
    assert data_error({"plan_id": "p", "steps": [{"id": "a", "tool": "demo"}]}) == (
        "<plan>: steps[0]: missing key 'prompt' or 'tasks' (what the tool is asked to do)")
    assert data_error({"plan_id": "p", "steps": [{"id": "a", "tool": "demo", "prompt": "x",
                                                  "timeout_sec": float("inf")}]}) == (
        "<plan>: steps[0].timeout_sec: expected a finite number, got inf")
    assert data_error({"plan_id": "p", "steps": []}, name="mine") == (
        "mine: steps: expected at least one step, got an empty list")


def test_python_data_tuples_and_paths() -> None:
    p = plan_from_data({"plan_id": "p", "steps": ({"id": "a", "tool": "demo", "prompt": "x",
                                                   "files_scope": {"writes": (Path("a.py"),)}},)})
    assert p.steps[0].writes == ("a.py",)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the plan file"):
        load_plan(tmp_path / "nope.yaml")


def test_yaml_syntax_error(tmp_path: Path) -> None:
    assert error(tmp_path, "plan_id: p\nsteps: [\n") .startswith("P:3: yaml: ")


# -- the examples -----------------------------------------------------------------------------

def test_example_rename() -> None:
    p = load_plan(EXAMPLES / "rename.yaml", tools=["demo"])
    assert p.globals.max_concurrency == 2
    assert [s.id for s in p.steps] == ["greet", "farewell", "both"]
    assert all(s.tool == "demo" and s.acceptance for s in p.steps)
    assert PlanGraph(p).waves(2) == [["greet", "farewell"], ["both"]]
    assert p.steps[0].prompt.startswith("edit greet.py: ")


def test_example_workstream() -> None:
    p = load_plan(EXAMPLES / "workstream.json", tools=["demo"])
    assert p.id == "ws-rename-greet"
    assert p.globals.max_concurrency == 2
    assert PlanGraph(p).levels() == [["code", "docs"], ["check"]]
    assert all(s.acceptance for s in p.steps)


@pytest.mark.parametrize("sid", ["integration", "a..b", "a.", "a.lock"])
def test_step_ids_that_cannot_name_a_branch(tmp_path: Path, sid: str) -> None:
    text = f"plan_id: p\nsteps:\n  - id: '{sid}'\n    tool: demo\n    prompt: x\n"
    assert error(tmp_path, text) == (
        f"P:3: steps[0].id: {sid!r} cannot name a step (its branch would be "
        f"aimterm/PLAN/{sid}, which git or the run's integration branch takes)")
