"""Job files and job results: loading every form, each mistake as its exact one-line message,
the published schemas (Draft 2020-12) agreeing with the loader, and the CLI around them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from aimterm.errors import ConfigError
from aimterm.jobs import (
    AcceptanceResult,
    Durations,
    Job,
    JobResult,
    JobStatus,
    jobs_from_data,
    load_jobs,
    load_jobs_text,
)
from aimterm.jobs.result import OUTPUT_TAIL_CHARS, RESULT_SCHEMA
from aimterm.jobs.schema import SCHEMA
from aimterm.jobs.spec import MAX_JOBS

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "jobs"
VALIDATOR = Draft202012Validator(SCHEMA)
TOOLS = {"demo", "aider", "claude"}


def load(text: str, base: Path = Path("/w"), tools: set[str] | None = TOOLS) -> list[Job]:
    return load_jobs_text(text, "jobs.yaml", base=base, tools=tools)


def error(text: str, base: Path = Path("/w")) -> str:
    with pytest.raises(ConfigError) as info:
        load(text, base)
    message = str(info.value)
    assert "\n" not in message
    return message


def schema_accepts(text: str) -> bool:
    import yaml

    try:
        data = json.loads(text)  # JSON indented with tabs is not YAML
    except ValueError:
        data = yaml.safe_load(text)
    return VALIDATOR.is_valid(data)


# -- good files ----------------------------------------------------------------------------------

ONE = """\
id: fix-cart
tool: demo
prompt: |
  edit cart.py: def load(items): return list(items)
files: [cart.py, ../shared/util.py]
cwd: shop
env: {DEBUG: 1, QUIET: true, NAME: x}
timeout_s: 90
retries: 2
acceptance: [python3 -m py_compile cart.py]
key: cart
tags: [fast]
metadata: {owner: ana, n: [1, 2]}
error_report: reports/fix-cart.json
"""


def test_one_job_every_key() -> None:
    (job,) = load(ONE)
    assert job == Job(
        id="fix-cart", tool="demo", prompt="edit cart.py: def load(items): return list(items)",
        files=("/w/shop/cart.py", "/w/shared/util.py"), cwd="/w/shop",
        env={"DEBUG": "1", "QUIET": "true", "NAME": "x"}, timeout_s=90.0, retries=2,
        acceptance=("python3 -m py_compile cart.py",), key="cart", tags=("fast",),
        metadata={"owner": "ana", "n": [1, 2]}, error_report="/w/reports/fix-cart.json")
    assert schema_accepts(ONE)


def test_defaults_and_files_relative_to_the_file_without_cwd() -> None:
    (job,) = load("id: a\ntool: demo\nprompt: hi\nfiles: [src/a.py]\n")
    assert job == Job(id="a", tool="demo", prompt="hi", files=("/w/src/a.py",))
    assert (job.cwd, job.timeout_s, job.retries, job.key, job.error_report) == (
        None, None, 0, None, None)


@pytest.mark.parametrize("text", [
    "- {id: a, tool: demo, prompt: x}\n- {id: b, tool: aider, prompt: y}\n",
    "jobs:\n  - {id: a, tool: demo, prompt: x}\n  - {id: b, tool: aider, prompt: y}\n",
    json.dumps({"jobs": [{"id": "a", "tool": "demo", "prompt": "x"},
                         {"id": "b", "tool": "aider", "prompt": "y"}]}, indent=2),
    # JSON indented with tabs, which YAML itself refuses.
    json.dumps([{"id": "a", "tool": "demo", "prompt": "x"},
                {"id": "b", "tool": "aider", "prompt": "y"}], indent="\t"),
], ids=["yaml-list", "yaml-jobs-key", "json-jobs-key", "json-tabs"])
def test_a_list_of_jobs_in_each_shape(text: str) -> None:
    jobs = load(text)
    assert [(j.id, j.tool, j.prompt) for j in jobs] == [("a", "demo", "x"), ("b", "aider", "y")]
    assert schema_accepts(text)


def test_json_surrogate_pairs_become_one_character() -> None:
    (job,) = load('{"id": "a", "tool": "demo", "prompt": "ok \\ud83d\\ude00"}')
    assert job.prompt == "ok \U0001F600"


PLAN = {
    "job_id": "job-2025-11-21-codex-001",  # breaks the plan's own pattern; loads here
    "workstream_id": "ws-cart",
    "run_id": "run-7",
    "tool": "aider",
    "command": {"exe": "aider", "args": ["--yes-always", "--message", "Rename fetch to load"]},
    "env": {"GIT_EDITOR": "true"},
    "paths": {"repo_root": "repo", "working_dir": "src", "log_file": "logs/j.log",
              "error_report": "logs/j.error.json"},
    "metadata": {"timeout_seconds": 600, "max_retries": 0, "retry_policy": "escalate_to_codex",
                 "files_scope": ["cart.py"], "escalation_from": "job-0", "priority": "high"},
    "acceptance_tests": ["pytest -q"],
}


def test_the_plans_job_form_maps_onto_a_job() -> None:
    (job,) = load(json.dumps(PLAN))
    assert job == Job(
        id="job-2025-11-21-codex-001", tool="aider", prompt="Rename fetch to load",
        files=("/w/repo/src/cart.py",), cwd="/w/repo/src", env={"GIT_EDITOR": "true"},
        timeout_s=600.0, retries=0,  # an explicit 0 stays 0
        acceptance=("pytest -q",), key="ws-cart",
        metadata={"retry_policy": "escalate_to_codex", "escalation_from": "job-0",
                  "priority": "high", "workstream_id": "ws-cart", "run_id": "run-7",
                  "repo_root": "/w/repo", "log_file": "/w/repo/logs/j.log",
                  "command": PLAN["command"]},
        error_report="/w/repo/logs/j.error.json")
    assert VALIDATOR.is_valid(PLAN)


def _plan(**changes: Any) -> str:
    data: dict[str, Any] = {"job_id": "job-1", "tool": "aider",
                            "command": {"exe": "aider", "args": ["-m", "hi"]}}
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not None})


def test_plan_defaults_and_retry_policy_none() -> None:
    (job,) = load(_plan())
    assert (job.prompt, job.retries, job.timeout_s, job.key, job.cwd) == ("hi", 3, None, None,
                                                                          None)
    (job,) = load(_plan(metadata={"retry_policy": "none"}))
    assert job.retries == 0
    (job,) = load(_plan(command={"exe": "x", "args": ["--prompt=from flag"]}))
    assert job.prompt == "from flag"


def test_plan_prompt_from_a_message_file(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "msg.txt").write_text("Add type hints\n\n", encoding="utf-8")
    paths = {"working_dir": "work"}
    by_flag = _plan(command={"exe": "aider", "args": ["--message-file", "msg.txt", "--yes"]},
                    paths=paths)
    by_meta = _plan(command=None, paths=paths, metadata={"message_file": "msg.txt"})
    for text in (by_flag, by_meta):
        (job,) = load(text, base=tmp_path)
        assert job.prompt == "Add type hints"
        assert job.cwd == str(tmp_path / "work")
        assert schema_accepts(text)


def test_the_examples_load_and_match_the_schema() -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")) + sorted(EXAMPLES.glob("*.json")):
        jobs = load_jobs(path, tools={"demo"})
        assert jobs and all(j.tool == "demo" and j.acceptance for j in jobs)
        for job in jobs:
            assert job.cwd is not None and Path(job.cwd).is_dir()
            assert all(Path(f).is_file() for f in job.files)
        assert schema_accepts(path.read_text(encoding="utf-8"))
    assert len(load_jobs(EXAMPLES / "refactor.yaml")) == 3


def test_to_dict_loads_back_as_the_same_job() -> None:
    for job in load(ONE) + load(json.dumps(PLAN)):
        again = load(json.dumps(job.to_dict()), base=Path("/elsewhere"))
        assert again == [job]
        assert VALIDATOR.is_valid(job.to_dict())


def test_jobs_from_python_data_have_no_line() -> None:
    jobs = jobs_from_data([{"id": "a", "tool": "demo", "prompt": "x", "files": ("f.py",),
                            "cwd": Path("/repo")}])
    assert jobs[0].files == ("/repo/f.py",) and jobs[0].cwd == "/repo"
    with pytest.raises(ConfigError) as info:
        jobs_from_data({"id": "a", "tool": "demo"}, "request")
    assert str(info.value) == "request: missing key 'prompt' (what the tool is asked to do)"
    with pytest.raises(ConfigError) as info:
        jobs_from_data({"id": "a", "tool": "demo", "prompt": "x", "timeout_s": float("nan")})
    assert str(info.value) == "<jobs>: timeout_s: expected a finite number, got nan"


# -- mistakes, each with its exact message -------------------------------------------------------

_JOB = "id: a\ntool: demo\nprompt: hi\n"
MISTAKES = [
    ("unknown-key", "jobs:\n  - id: a\n    tool: demo\n    prompt: hi\n    promt: x\n",
     "jobs.yaml:5: jobs[0].promt: unknown key 'promt' (expected one of: acceptance, cwd, env, "
     "error_report, files, id, key, metadata, prompt, retries, tags, timeout_s, tool)"),
    ("missing", "- id: a\n  tool: demo\n",
     "jobs.yaml:1: [0]: missing key 'prompt' (what the tool is asked to do)"),
    ("wrong-type", _JOB + "retries: many\n",
     "jobs.yaml:4: retries: expected an integer, got string 'many'"),
    ("retries-bound", _JOB + "retries: 11\n",
     "jobs.yaml:4: retries: expected an integer from 0 to 10, got 11"),
    ("timeout-bound", _JOB + "timeout_s: 2592001\n",
     "jobs.yaml:4: timeout_s: expected a number <= 2592000 (30 days in seconds), got 2.592e+06"),
    ("timeout-zero", _JOB + "timeout_s: 0\n",
     "jobs.yaml:4: timeout_s: expected a number > 0, got 0"),
    ("duplicate-id", "jobs:\n  - {id: a, tool: demo, prompt: x}\n  - {id: b, tool: demo, "
     "prompt: x}\n  - {id: a, tool: demo, prompt: y}\n",
     "jobs.yaml:4: jobs[2].id: duplicate id 'a' (jobs[0] has it too, line 2)"),
    ("tool-name", "id: a\ntool: Aider\nprompt: hi\n",
     "jobs.yaml:2: tool: expected an adapter name (lowercase letters, digits, '.', '_' or '-'), "
     "got string 'Aider'"),
    ("tool-unknown", "id: a\ntool: nope\nprompt: hi\n",
     "jobs.yaml:2: tool: no adapter named 'nope' (expected one of: aider, claude, demo)"),
    ("id", "id: a/b\ntool: demo\nprompt: hi\n",
     "jobs.yaml:1: id: expected a job id (letters, digits, '.', '_' or '-', starting with a "
     "letter or digit; at most 128 characters), got string 'a/b'"),
    ("empty-file", "", "jobs.yaml:1: empty job file: expected a job, a list of jobs, or "
                       "{jobs: [...]}"),
    ("empty-list", "jobs: []\n", "jobs.yaml:1: jobs: expected at least one job, got an empty list"),
    ("scalar", "hello\n", "jobs.yaml:1: expected a job, a list of jobs, or {jobs: [...]}, got "
                          "string 'hello'"),
    ("wrapper-key", "jobs: [{id: a, tool: demo, prompt: x}]\nversion: 1\n",
     "jobs.yaml:2: version: unknown key 'version' (expected one of: jobs)"),
    ("not-a-job", "- {id: a, tool: demo, prompt: x}\n- just text\n",
     "jobs.yaml:2: [1]: expected a job (a mapping), got string 'just text'"),
    ("both-forms", "id: a\njob_id: b\ntool: demo\n",
     "jobs.yaml:1: both 'id' and 'job_id': write a job in one form, aimterm's (id) or the "
     "plan's (job_id)"),
    ("acceptance", _JOB + "acceptance: pytest\n",
     "jobs.yaml:4: acceptance: expected a list of shell commands, got string 'pytest'"),
    ("acceptance-item", _JOB + "acceptance:\n  - pytest\n  - 3\n",
     "jobs.yaml:6: acceptance[1]: expected a non-empty string, got integer 3"),
    ("tags-bound", _JOB + "tags: [" + ", ".join(["t"] * 33) + "]\n",
     "jobs.yaml:4: tags[32]: expected at most 32 tags, got 33"),
    ("env", _JOB + "env: {A: [1]}\n",
     "jobs.yaml:4: env.A: expected a string, a number, or true/false, got a list"),
    ("metadata-date", _JOB + "metadata:\n  when: 2025-11-21\n",
     "jobs.yaml:5: metadata.when: expected JSON data (text, numbers, true/false, null, lists, "
     "mappings), got date 2025-11-21; quote it"),
    ("blank-prompt", "id: a\ntool: demo\nprompt: '  '\n",
     "jobs.yaml:3: prompt: expected a prompt, got only whitespace"),
    ("nul", '{"id": "a", "tool": "demo", "prompt": "hi",\n "cwd": "a\\u0000b"}',
     "jobs.yaml:2: cwd: expected text without NUL characters"),
    ("lone-surrogate", '{"id": "a", "tool": "demo",\n "prompt": "\\ud83d"}',
     "jobs.yaml:2: prompt: expected text, got a lone UTF-16 surrogate"),
    ("yaml-syntax", "id: [a\n", "jobs.yaml:2: yaml: expected ',' or ']', but got '<stream end>'"),
    ("plan-no-prompt", '{"job_id": "job-1", "tool": "aider",\n "command": {"exe": "aider", '
                       '"args": ["--yes"]}}',
     "jobs.yaml:2: command: no prompt: expected --message TEXT, -m TEXT, --prompt TEXT or "
     "--message-file FILE in command.args, or metadata.message_file"),
    ("plan-policy-conflict", _plan(metadata={"max_retries": 2, "retry_policy": "none"}),
     "jobs.yaml:1: metadata.max_retries: 2 retries with retry_policy none: set max_retries to 0 "
     "or choose another retry_policy"),
    ("plan-policy", _plan(metadata={"retry_policy": "later"}),
     "jobs.yaml:1: metadata.retry_policy: expected one of: none, retry_same, escalate_to_codex, "
     "escalate_to_claude; got string 'later'"),
    ("plan-timeout", _plan(metadata={"timeout_seconds": 0.5}),
     "jobs.yaml:1: metadata.timeout_seconds: expected a number >= 1, got 0.5"),
    ("plan-paths", _plan(paths={"repo": "."}),
     "jobs.yaml:1: paths.repo: unknown key 'repo' (expected one of: error_report, log_file, "
     "repo_root, working_dir)"),
    ("plan-message-file", _plan(command={"exe": "aider", "args": ["--message-file", "no.txt"]}),
     "jobs.yaml:1: command.args[1]: /w/no.txt: cannot read the message file: No such file or "
     "directory"),
    ("plan-unknown", '{"job_id": "job-1", "tool": "aider", "cmd": 1}',
     "jobs.yaml:1: cmd: unknown key 'cmd' (expected one of: acceptance_tests, command, env, "
     "job_id, metadata, paths, run_id, tool, workstream_id)"),
]
#: Mistakes only the loader sees: the schema cannot say them (or says them otherwise).
SEMANTIC = {"duplicate-id", "tool-unknown", "blank-prompt", "nul", "lone-surrogate",
            "yaml-syntax", "plan-no-prompt", "plan-policy-conflict", "plan-message-file",
            "metadata-date", "empty-file"}


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in MISTAKES],
                         ids=[name for name, _, _ in MISTAKES])
def test_each_mistake_is_one_exact_line(text: str, message: str) -> None:
    assert error(text) == message


@pytest.mark.parametrize("text", [t for name, t, _ in MISTAKES if name not in SEMANTIC],
                         ids=[name for name, _, _ in MISTAKES if name not in SEMANTIC])
def test_the_schema_refuses_the_same_structural_mistakes(text: str) -> None:
    assert not schema_accepts(text)


def test_too_many_jobs() -> None:
    text = "[\n" + ",\n".join(json.dumps({"id": f"j{i}", "tool": "demo", "prompt": "x"})
                              for i in range(MAX_JOBS + 1)) + "\n]"
    assert error(text) == f"jobs.yaml:{MAX_JOBS + 2}: [{MAX_JOBS}]: expected at most " \
                          f"{MAX_JOBS} jobs, got {MAX_JOBS + 1}"


def test_a_missing_file_names_itself(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_jobs(tmp_path / "nope.yaml")
    assert str(info.value) == (f"{tmp_path / 'nope.yaml'}: cannot read the job file: No such "
                               f"file or directory")


def test_any_tool_name_without_a_tool_list() -> None:
    assert load("id: a\ntool: whatever\nprompt: hi\n", tools=None)[0].tool == "whatever"


_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["id", "job_id", "tool", "prompt", "files", "cwd", "env", "jobs",
                         "command", "paths", "metadata", "args", "exe", "retries"]) | st.text(
            max_size=5), inner, max_size=5),
    max_leaves=15)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_junk)
def test_any_data_gives_jobs_or_one_config_error(data: Any) -> None:
    try:
        jobs_from_data(data, base="/w")
    except ConfigError as exc:
        assert "\n" not in str(exc)
    try:
        load_jobs_text(json.dumps(data), "j.json", base="/w")
    except ConfigError as exc:
        assert str(exc).startswith("j.json:") and "\n" not in str(exc)


# -- the schemas ---------------------------------------------------------------------------------

def test_the_schemas_are_draft_2020_12() -> None:
    for schema in (SCHEMA, RESULT_SCHEMA):
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)


# -- results -------------------------------------------------------------------------------------

def _result() -> JobResult:
    return JobResult(
        job_id="cart", status=JobStatus.FAILED, exit_code=2, reply="Wrote 40 bytes",
        files_changed=("/w/shop/cart.py",),
        acceptance=(AcceptanceResult("python3 -m py_compile cart.py", 0, "", 0.05),
                    AcceptanceResult("pytest -q", 2, "x" * (OUTPUT_TAIL_CHARS + 10) + "FAILED",
                                     1.5),
                    AcceptanceResult("sleep 999", None, "", 600.0)),
        instance="demo-2", attempts=2, duration_s=Durations(0.25, 3.5, 601.55),
        tokens={"input": 120, "output": 40}, cost_usd=0.0123, error="pytest -q exited 2",
        error_report_path="/w/reports/cart.json", metadata={"step": "rename"})


def test_result_round_trips_and_matches_its_schema() -> None:
    result = _result()
    data = result.to_dict()
    assert data["success"] is False and data["duration_s"]["total"] == pytest.approx(605.3)
    assert data["acceptance"][1]["output"].endswith("FAILED")
    assert len(data["acceptance"][1]["output"]) == OUTPUT_TAIL_CHARS
    assert [a["passed"] for a in data["acceptance"]] == [True, False, False]
    Draft202012Validator(RESULT_SCHEMA).validate(data)
    again = JobResult.from_dict(json.loads(json.dumps(data)))
    assert again == result


def test_result_exit_code_follows_the_status() -> None:
    assert JobResult("a", JobStatus.SUCCEEDED).exit_code == 0
    assert JobResult("a", JobStatus.SUCCEEDED).success
    assert JobResult("a", "timed_out").exit_code == 124  # type: ignore[arg-type]
    assert JobResult("a", JobStatus.CANCELLED, attempts=0).exit_code == 130
    minimal = JobResult.from_dict({"job_id": "a", "status": "failed"})
    assert (minimal.exit_code, minimal.success, minimal.attempts) == (1, False, 1)
    with pytest.raises(ValueError, match="exit_code: expected 0 for status succeeded, got 3"):
        JobResult("a", JobStatus.SUCCEEDED, exit_code=3)
    with pytest.raises(ValueError, match="expected a code other than 0 for status failed"):
        JobResult("a", JobStatus.FAILED, exit_code=0)


@pytest.mark.parametrize(("change", "message"), [
    ({"status": "done"}, "status: expected one of: succeeded, failed, timed_out, cancelled; "
                         "got 'done'"),
    ({"attempts": "2"}, "attempts: expected int, got str"),
    ({"success": True}, "success: expected false for status failed, got True"),
    ({"acceptance": [{"exit_code": 0}]}, "acceptance[0].command: missing"),
    ({"duration_s": {"queued": float("nan")}}, "duration_s.queued: expected float, got float"),
    ({"tokens": {"input": 1.5}}, "tokens.input: expected int, got float"),
])
def test_result_from_bad_data_names_the_key(change: dict[str, Any], message: str) -> None:
    data = {**_result().to_dict(), **change}
    with pytest.raises(ValueError) as info:
        JobResult.from_dict(data)
    assert str(info.value) == message


# -- the command line ----------------------------------------------------------------------------

def aimterm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_CONFIG_HOME=str(cwd / "config"))
    env.pop("AIMTERM_ADAPTER_PATH", None)
    return subprocess.run([sys.executable, "-m", "aimterm", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=60)


def test_cli_validate_and_schema(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {id: a, tool: demo, prompt: x}\n- {id: b, tool: nope, prompt: y}\n",
                   encoding="utf-8")
    good = EXAMPLES / "refactor.yaml"
    out = aimterm("jobs", "validate", str(good), str(EXAMPLES / "plan-job.json"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{good}: ok: 3 jobs\n{EXAMPLES / 'plan-job.json'}: ok: 1 job\n"

    out = aimterm("jobs", "validate", str(good), str(bad), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stdout == f"{good}: ok: 3 jobs\n"
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"{bad}:2: [1].tool: no adapter named 'nope' (expected one of: ")
    assert "demo" in line
    assert aimterm("jobs", "validate", "--any-tool", str(bad), cwd=tmp_path).returncode == 0

    out = aimterm("job", "schema", cwd=tmp_path)
    assert out.returncode == 0
    assert json.loads(out.stdout) == SCHEMA
    out = aimterm("job", "schema", "--result", cwd=tmp_path)
    assert json.loads(out.stdout) == RESULT_SCHEMA

    out = aimterm("jobs", "--help", cwd=tmp_path)
    assert out.returncode == 0 and "validate" in out.stdout and "schema" in out.stdout
    assert "jobs" in aimterm("--help", cwd=tmp_path).stdout


def test_the_docs_examples_hold() -> None:
    import re

    text = (REPO / "docs" / "jobs.md").read_text(encoding="utf-8")
    for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL):
        assert len(load_jobs_text(block, "doc", base=EXAMPLES, tools={"demo"})) == 3
    messages = {m for _, _, m in MISTAKES}
    shown = re.search(r"## Mistakes.*?```\n(.*?)```", text, re.DOTALL)
    assert shown is not None
    for line in shown.group(1).splitlines():
        if "no adapter named" not in line:  # that one lists the adapters installed
            assert line in messages
