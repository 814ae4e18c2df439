"""Jobs on the real agent CLIs, pointed at the fake model server: each built-in adapter's job
recipe (its ``jobs:`` section) run through the :class:`~aimterm.jobs.Orchestrator`.

For each CLI, in a throwaway git repository:

* three jobs, each changing one file and checked by an acceptance command, run pooled on
  three instances, then one-shot (the tool's own non-interactive command, once per job): all
  succeed, and each names its own file among the files it changed;
* a job whose edit goes out of bounds fails, with the reason in its ``error``. One-shot, every
  CLI refuses a write outside the repository by itself (the run then ends normally and the
  acceptance command finds nothing). Pooled, aider asks before editing a file that is not in
  its chat, and Claude Code and Codex ask before writing outside their folder; no rule of the
  built-in adapters answers, so the job fails on the question. Gemini CLI (auto_edit) refuses
  such a write without asking.

The fake model scripts the edits: a tool call for Claude Code, Codex and Gemini CLI; for
aider, which applies the edit blocks it finds in the model's text, a reply in its "whole" edit
format. Each CLI's offline setup (``aimterm.testing.offline``) is the jobs' ``env``: the pooled
instances start with it and the one-shot runs get it. The only settings added there are the
ones a user running jobs on a pool would choose: Claude Code's "acceptEdits" permission mode
and Gemini CLI's "auto_edit" approval mode (edits inside the folder go through without a
question). The one-shot commands choose their modes themselves.

Skipped when a CLI is not installed (scripts/install-agent-clis). Run one CLI at a time
(``-k aider``); ``-s`` prints the timings.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from aimterm.jobs import Orchestrator
from aimterm.jobs.result import JobResult, JobStatus
from aimterm.testing.clis import find_cli
from aimterm.testing.fakemodel import FakeModel, ToolCall, default_reply
from aimterm.testing.offline import git_workdir
from aimterm.testing.plugin import AdapterDir, OfflineEnv
from tests.helpers import CODEX_EDIT_QUESTION, var_tmp_dir

pytestmark = pytest.mark.aimterm_no_leaks

NAMES = ("alpha", "bravo", "charlie")
PROMPTS = {name: f"Change {name}.txt so that it says NEW-{name.upper()}" for name in NAMES}
#: aider, pooled: an edit of a file of the repository that is not in the chat.
NOTES = "notes.txt"
NOTES_PROMPT = "Change the notes file so that it says NEW-STRAY"
#: Everyone: a write outside the repository (the job's prompt names the file).
OUTSIDE = "outside.txt"
OUTSIDE_PROMPT = "Write NEW-STRAY into the file outside the repository,"
STRAY = "NEW-STRAY"
THINK_S = 0.2
#: A job's own timeout (the tool's turn); the whole batch gets BATCH_LIMIT_S.
JOB_TIMEOUT_S = 90.0
BATCH_LIMIT_S = 300.0
#: pytest-timeout's limit per test, above two batches' (the last resort: the batch's own
#: deadline fails the test first, with the results).
TEST_LIMIT_S = 2 * BATCH_LIMIT_S + 200

# Everything goes under /var/tmp (tests.helpers.var_tmp_dir): codex will not run from /tmp.
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "Jobs Test", "GIT_AUTHOR_EMAIL": "jobs@example.invalid",
                "GIT_COMMITTER_NAME": "Jobs Test", "GIT_COMMITTER_EMAIL": "jobs@example.invalid"}
_OUTSIDE_PATH = re.compile(r"(/\S+/" + re.escape(OUTSIDE) + ")")


def whole_block(path: str, text: str) -> str:
    """An edit in aider's "whole" format: the file name on a line, then the whole file."""
    return f"Done.\n\n{path}\n```\n{text}\n```"


def aider_reply(prompt: str) -> str:
    for name, known in PROMPTS.items():
        if prompt == known:
            return whole_block(f"{name}.txt", f"NEW-{name.upper()}")
    if prompt == NOTES_PROMPT:
        return whole_block(NOTES, STRAY)
    found = _OUTSIDE_PATH.search(prompt)
    if found:
        # An absolute path: aider refuses it ("is not in the subpath of" the repository).
        # (A relative "../outside.txt" would not do: --yes-always answers "Create new file?"
        # and aider creates it, empty, before it finds the path outside the repository.)
        return whole_block(found.group(1), STRAY)
    return default_reply(prompt)


TOOL_CALLS = {**{known: ToolCall(kind="edit", path=f"{name}.txt", content=f"NEW-{name.upper()}\n")
                 for name, known in PROMPTS.items()},
              OUTSIDE_PROMPT: ToolCall(kind="edit", path=f"../{OUTSIDE}", content=f"{STRAY}\n")}
#: The prompts the fake model maps the agents' messages to. Not OUTSIDE_PROMPT: the job's
#: prompt adds the file's path to it, which aider's reply needs to see whole.
KNOWN = [*PROMPTS.values(), NOTES_PROMPT]


def cli_param(cli: str) -> Any:
    """One CLI: skipped when it is not installed, with the fake model that scripts its edits."""
    model = (pytest.mark.aimterm_fake_model(think_s=THINK_S, prompts=KNOWN, reply=aider_reply)
             if cli == "aider" else
             pytest.mark.aimterm_fake_model(think_s=THINK_S, prompts=KNOWN, tool_calls=TOOL_CALLS))
    missing = pytest.mark.skipif(find_cli(cli) is None, reason=f"{cli} is not installed (run "
                                 "scripts/install-agent-clis)")
    return pytest.param(cli, marks=[model, missing], id=cli)


CLIS = [cli_param(cli) for cli in ("aider", "claude", "codex", "gemini")]

#: What each CLI prints when it refuses the write outside the repository one-shot (Claude Code
#: prints nothing of it: only the model hears of the refusal).
ONESHOT_REFUSAL = {"aider": "is not in the subpath of", "claude": None,
                   "codex": "writing outside of the project", "gemini": "Path not in workspace"}


@pytest.fixture
def root() -> Iterator[Path]:
    yield from var_tmp_dir("jobs")


@pytest.fixture
def orch(root: Path) -> Iterator[Orchestrator]:
    # Only instances of its own (never a daemon's fleet); no store, no reports.
    with Orchestrator(instances_per_tool=3, fleet=None, state_dir=root / "state",
                      record=False) as orchestrator:
        yield orchestrator


def workspace(cli: str, root: Path, offline: OfflineEnv) -> tuple[Path, dict[str, str]]:
    """The repository the jobs work in, and the CLI's offline environment (the jobs' env)."""
    repo = root / "repo"
    # No approval mode in the user's settings: the adapters' jobs.pooled_args (claude's
    # acceptEdits, gemini's auto_edit) are what lets a pooled job edit without asking.
    options: dict[str, Any] = {}
    if cli == "gemini":
        options["trust"] = [repo]
    env = offline(cli, root / "home", **options)
    files = {f"{name}.txt": "old\n" for name in NAMES}
    files[NOTES] = "old notes\n"
    git_workdir(repo, files=files, commit=True, env={**env, **GIT_IDENTITY})
    return repo, env


def tool_for(cli: str, repo: Path, adapters: AdapterDir) -> str:
    """The adapter the jobs name. Codex asks before some edits inside its folder even when
    the folder is trusted (seen on a loaded machine), and the built-in adapter approves
    nothing: its jobs run on an extension with one answer rule, edits inside the repository,
    as a user running codex jobs would write it."""
    if cli != "codex":
        return cli
    edits = CODEX_EDIT_QUESTION
    adapters.add("codex-jobs", textwrap.dedent(f"""\
        extends: codex
        answers:
          - name: edit-in-repo
            match: '{edits}'
            when: {{file: '^{re.escape(str(repo))}/(?!.*\\.\\./)'}}
            send: "y"
        """))
    return "codex-jobs"


def edit_jobs(cli: str, repo: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    return [{"id": name, "tool": cli, "prompt": PROMPTS[name], "files": [f"{name}.txt"],
             "cwd": str(repo), "env": env, "timeout_s": JOB_TIMEOUT_S,
             "acceptance": [f"grep -q NEW-{name.upper()} {name}.txt"]} for name in NAMES]


def execute(orch: Orchestrator, jobs: Sequence[dict[str, Any]], mode: str) -> list[JobResult]:
    """``orch.execute_jobs`` with a deadline: past it the batch is cancelled and the test fails."""
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jobs-live")
    future = pool.submit(orch.execute_jobs, jobs, mode=mode)  # type: ignore[arg-type]
    try:
        return future.result(BATCH_LIMIT_S)
    except concurrent.futures.TimeoutError:
        orch.cancel()
        try:
            late = [r.to_dict() for r in future.result(90)]
        except concurrent.futures.TimeoutError:
            late = []
        pytest.fail(f"the batch was not done after {BATCH_LIMIT_S:g} s; cancelled: {late}",
                    pytrace=False)
    finally:
        pool.shutdown(wait=False)


def words(text: str) -> str:
    return " ".join(text.split())


def check_edits(results: list[JobResult], repo: Path, fake: FakeModel) -> None:
    assert [r.job_id for r in results] == list(NAMES)
    for name, r in zip(NAMES, results, strict=True):
        assert r.status is JobStatus.SUCCEEDED, (r.error, r.instance, r.reply[-400:])
        assert r.exit_code == 0 and r.error is None and r.attempts == 1, r.to_dict()
        assert [(a.command, a.passed) for a in r.acceptance] == \
            [(f"grep -q NEW-{name.upper()} {name}.txt", True)]
        mine = str(repo / f"{name}.txt")
        assert mine in r.files_changed, r.files_changed
        theirs = {str(repo / f"{other}.txt") for other in NAMES if other != name}
        assert not theirs & set(r.files_changed), r.files_changed
        assert (repo / f"{name}.txt").read_text().strip() == f"NEW-{name.upper()}"
        # The model's last words, whether they come from the tool's record (pooled) or from
        # what the one-shot command printed.
        assert words(fake.expected_reply(PROMPTS[name])) in words(r.reply), r.reply
    assert (repo / NOTES).read_text() == "old notes\n"


def timings(label: str, results: list[JobResult], wall: float) -> None:
    print(f"\n{label}: {wall:.1f} s for {len(results)} jobs")
    for r in results:
        d = r.duration_s
        print(f"  {r.job_id}: {r.status.value} on {r.instance or 'one-shot'}: queued "
              f"{d.queued:.2f} s, running {d.running:.2f} s, checking {d.checking:.2f} s")


@pytest.mark.timeout(TEST_LIMIT_S)
@pytest.mark.parametrize("cli", CLIS)
def test_three_jobs_pooled(cli: str, aimterm_fake_model: FakeModel,
                           aimterm_offline_env: OfflineEnv, aimterm_adapters: AdapterDir,
                           root: Path, orch: Orchestrator) -> None:
    repo, env = workspace(cli, root, aimterm_offline_env)
    tool = tool_for(cli, repo, aimterm_adapters)
    t0 = time.monotonic()
    results = execute(orch, edit_jobs(tool, repo, env), "pooled")
    timings(f"{cli} pooled", results, time.monotonic() - t0)
    check_edits(results, repo, aimterm_fake_model)
    # One lane (same tool, folder and environment) of three instances.
    [pool] = orch.pools().values()
    rows = [row for row in pool.status() if row["lifecycle"] == "active"]
    assert len(rows) == 3 and {row["adapter"] for row in rows} == {tool}, rows
    assert {r.instance for r in results} <= {row["id"] for row in rows}
    if cli == "aider":
        # Each file was added with /add before its prompt, which went to the model as a
        # plain message: the request carries the file as it was ("<name>.txt", a fence, "old").
        for name in NAMES:
            [asked] = [r for r in aimterm_fake_model.model_requests()
                       if r.prompt == PROMPTS[name]]
            assert f"{name}.txt\\n```\\nold" in json.dumps(asked.body)


@pytest.mark.timeout(TEST_LIMIT_S)
@pytest.mark.parametrize("cli", CLIS)
def test_three_jobs_oneshot(cli: str, aimterm_fake_model: FakeModel,
                            aimterm_offline_env: OfflineEnv, root: Path,
                            orch: Orchestrator) -> None:
    repo, env = workspace(cli, root, aimterm_offline_env)
    t0 = time.monotonic()
    results = execute(orch, edit_jobs(cli, repo, env), "oneshot")
    timings(f"{cli} one-shot", results, time.monotonic() - t0)
    check_edits(results, repo, aimterm_fake_model)
    assert all(r.instance is None for r in results)
    assert orch.pools() == {}


@pytest.mark.timeout(TEST_LIMIT_S)
@pytest.mark.parametrize("cli", CLIS)
def test_an_edit_outside_the_repository_fails_oneshot(cli: str, aimterm_fake_model: FakeModel,
                                                      aimterm_offline_env: OfflineEnv,
                                                      root: Path, orch: Orchestrator) -> None:
    repo, env = workspace(cli, root, aimterm_offline_env)
    outside = root / OUTSIDE
    check = f"grep -q {STRAY} ../{OUTSIDE}"
    job = {"id": "stray", "tool": cli, "prompt": f"{OUTSIDE_PROMPT} {outside}", "cwd": str(repo),
           "env": env, "timeout_s": JOB_TIMEOUT_S, "acceptance": [check]}
    t0 = time.monotonic()
    [result] = execute(orch, [job], "oneshot")
    timings(f"{cli} one-shot, refused", [result], time.monotonic() - t0)
    assert result.status is JobStatus.FAILED, result.to_dict()
    # The tool ended normally (exit 0): the acceptance command is what found the job undone.
    assert result.error == f"acceptance: {check} exited 2", result.to_dict()
    assert result.exit_code == 2 and result.attempts == 1
    assert not outside.exists()
    said = ONESHOT_REFUSAL[cli]
    if said is not None:
        assert said in result.reply, result.reply
    # The model did ask for the write: the tool refused it.
    asked = [r for r in aimterm_fake_model.model_requests()
             if OUTSIDE_PROMPT in (r.prompt or "") and (r.answer_kind == "tool_call"
                                                         or OUTSIDE in r.answer)]
    assert asked


@pytest.mark.timeout(TEST_LIMIT_S)
@pytest.mark.parametrize("cli", CLIS)
def test_an_edit_out_of_bounds_fails_pooled(cli: str, aimterm_fake_model: FakeModel,
                                            aimterm_offline_env: OfflineEnv,
                                            aimterm_adapters: AdapterDir, root: Path,
                                            orch: Orchestrator) -> None:
    repo, env = workspace(cli, root, aimterm_offline_env)
    tool = tool_for(cli, repo, aimterm_adapters)
    outside = root / OUTSIDE
    if cli == "aider":
        # A file of the repository, but not in the chat: aider asks before it edits it.
        prompt, check = NOTES_PROMPT, f"grep -q {STRAY} {NOTES}"
    else:
        prompt, check = f"{OUTSIDE_PROMPT} {outside}", f"grep -q {STRAY} ../{OUTSIDE}"
    # A short timeout: should the question go unnoticed, the job ends at it, not much later.
    job = {"id": "stray", "tool": tool, "prompt": prompt, "cwd": str(repo), "env": env,
           "timeout_s": 45, "acceptance": [check]}
    t0 = time.monotonic()
    [result] = execute(orch, [job], "pooled")
    timings(f"{cli} pooled, refused", [result], time.monotonic() - t0)
    assert result.status is JobStatus.FAILED, result.to_dict()
    error = result.error or ""
    if cli == "gemini":
        # auto_edit: Gemini refuses a write outside its workspace without asking.
        assert error == f"acceptance: {check} exited 2", result.to_dict()
    else:
        assert "question no rule answers" in error, result.to_dict()
        assert (NOTES if cli == "aider" else OUTSIDE) in error, error
    assert not outside.exists()
    assert (repo / NOTES).read_text() == "old notes\n"
    # The instance was given back: it takes the next job.
    [after] = execute(orch, edit_jobs(tool, repo, env)[:1], "pooled")
    assert after.status is JobStatus.SUCCEEDED, after.to_dict()
    git = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True,
                         text=True, check=True).stdout
    assert NOTES not in git
