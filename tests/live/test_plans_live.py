"""A plan on the real agent CLIs, pointed at the fake model server: three steps run through
:class:`~aimterm.plans.PlanRun` in a throwaway git repository, each step one job of the CLI in
a worktree and branch of its own, merged back through the merge train into the integration
branch.

Two steps run side by side (``max_concurrency`` 2), each changing its own file (alpha.txt,
bravo.txt); a third depends on both, changes charlie.txt, and its acceptance test checks all
three files, so it passes only on top of both merges. Each step is a lone job, so it runs
one-shot (the tool's own non-interactive command) in its worktree, under
``<state dir>/worktrees/<run>/<step>`` (not under ``.git``: Claude Code refuses to write
anywhere below a ``.git`` folder).

The fake model scripts the edits as the jobs live test does (tests/live/test_jobs_live.py):
a tool call with a path relative to the tool's working directory for Claude Code, Codex and
Gemini CLI; for aider, a reply in its "whole" edit format naming the file relative to the
repository (the worktree's root). Each CLI's offline setup (``aimterm.testing.offline``) is
the steps' ``env``.

What a tool writes for itself (aider's chat history and repository map: its adapter's
``jobs.ignore``) is never committed, so parallel aider steps do not collide on it and the
integration branch holds only the three files.

Skipped when a CLI is not installed (scripts/install-agent-clis). Run one CLI at a time
(``-k claude``); ``-s`` prints the timings.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aimterm.plans import PlanRun, plan_from_data
from aimterm.plans.runner import PlanResult
from aimterm.testing.clis import find_cli
from aimterm.testing.fakemodel import FakeModel, ToolCall, default_reply
from aimterm.testing.offline import git_workdir
from aimterm.testing.plugin import OfflineEnv
from tests.helpers import var_tmp_dir

pytestmark = pytest.mark.aimterm_no_leaks

NAMES = ("alpha", "bravo", "charlie")
PROMPTS = {name: f"Change {name}.txt so that it says NEW-{name.upper()}" for name in NAMES}
PLAN_ID = "live"
INTEGRATION = f"aimterm/{PLAN_ID}/integration"
THINK_S = 0.2
#: A step's own timeout (the tool's turn); the whole run gets RUN_LIMIT_S.
STEP_TIMEOUT_S = 90.0
RUN_LIMIT_S = 240.0
TEST_LIMIT_S = RUN_LIMIT_S + 120

# Everything goes under /var/tmp (tests.helpers.var_tmp_dir): codex will not run from /tmp.
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "Plans Test", "GIT_AUTHOR_EMAIL": "plans@example.invalid",
                "GIT_COMMITTER_NAME": "Plans Test",
                "GIT_COMMITTER_EMAIL": "plans@example.invalid"}


def whole_block(path: str, text: str) -> str:
    """An edit in aider's "whole" format: the file name on a line, then the whole file."""
    return f"Done.\n\n{path}\n```\n{text}\n```"


def aider_reply(prompt: str) -> str:
    for name, known in PROMPTS.items():
        if prompt == known:
            return whole_block(f"{name}.txt", f"NEW-{name.upper()}")
    return default_reply(prompt)


TOOL_CALLS = {known: ToolCall(kind="edit", path=f"{name}.txt", content=f"NEW-{name.upper()}\n")
              for name, known in PROMPTS.items()}
KNOWN = list(PROMPTS.values())


def cli_param(cli: str) -> Any:
    """One CLI: skipped when it is not installed, with the fake model that scripts its edits."""
    model = (pytest.mark.aimterm_fake_model(think_s=THINK_S, prompts=KNOWN, reply=aider_reply)
             if cli == "aider" else
             pytest.mark.aimterm_fake_model(think_s=THINK_S, prompts=KNOWN, tool_calls=TOOL_CALLS))
    missing = pytest.mark.skipif(find_cli(cli) is None, reason=f"{cli} is not installed (run "
                                 "scripts/install-agent-clis)")
    return pytest.param(cli, marks=[model, missing], id=cli)


CLIS = [cli_param(cli) for cli in ("aider", "claude", "codex", "gemini")]


@pytest.fixture
def root() -> Iterator[Path]:
    yield from var_tmp_dir("plans")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_IDENTITY},
                          check=True, timeout=30, capture_output=True, text=True).stdout.strip()


def workspace(cli: str, root: Path, offline: OfflineEnv) -> tuple[Path, dict[str, str]]:
    """The repository the plan runs in, and the CLI's offline environment (the steps' env)."""
    repo = root / "repo"
    options: dict[str, Any] = {}
    if cli == "claude":
        options["settings"] = {"permissions": {"defaultMode": "acceptEdits"}}
    if cli == "gemini":
        options["trust"] = [repo]
    env = offline(cli, root / "home", **options)
    if cli == "gemini":
        settings = root / "home" / ".gemini" / "settings.json"
        data = json.loads(settings.read_text())
        data["general"]["defaultApprovalMode"] = "auto_edit"
        settings.write_text(json.dumps(data, indent=2))
    files = {f"{name}.txt": "old\n" for name in NAMES}
    git_workdir(repo, files=files, commit=True, env={**env, **GIT_IDENTITY})
    return repo, env


def check(name: str) -> str:
    return f"grep -qx NEW-{name.upper()} {name}.txt"


def plan_data(cli: str, env: dict[str, str]) -> dict[str, Any]:
    def step(name: str, *deps: str, acceptance: list[str]) -> dict[str, Any]:
        return {"id": name, "tool": cli, "prompt": PROMPTS[name], "depends_on": list(deps),
                "files_scope": {"writes": [f"{name}.txt"]}, "env": dict(env),
                "timeout_sec": STEP_TIMEOUT_S, "acceptance_tests": acceptance}

    return {"plan_id": PLAN_ID, "globals": {"max_concurrency": 2},
            "steps": [step("alpha", acceptance=[check("alpha")]),
                      step("bravo", acceptance=[check("bravo")]),
                      step("charlie", "alpha", "bravo",
                           acceptance=[check(name) for name in NAMES])]}


def run_plan(runner: PlanRun) -> PlanResult:
    """``runner.run()`` with a deadline: past it the run is cancelled and the test fails."""
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="plans-live")
    future = pool.submit(runner.run)
    try:
        return future.result(RUN_LIMIT_S)
    except concurrent.futures.TimeoutError:
        runner.cancel()
        try:
            late = future.result(90).to_dict()
        except concurrent.futures.TimeoutError:
            late = {}
        pytest.fail(f"the plan was not done after {RUN_LIMIT_S:g} s; cancelled: {late}\n"
                    f"{runner.view()}", pytrace=False)
    finally:
        pool.shutdown(wait=False)


def timings(cli: str, result: PlanResult, wall: float) -> None:
    print(f"\n{cli} plan: {result.status} in {wall:.1f} s")
    for s in result.steps:
        spent = ", ".join(f"{k} {v:.2f} s" for k, v in s.timings.items())
        print(f"  {s.step_id}: {s.state} after {s.attempts} attempt(s), {s.elapsed_s:.1f} s "
              f"({spent})" + (f": {s.error}" if s.error else ""))


@pytest.mark.timeout(TEST_LIMIT_S)
@pytest.mark.parametrize("cli", CLIS)
def test_a_three_step_plan_merges(cli: str, aimterm_fake_model: FakeModel,
                                  aimterm_offline_env: OfflineEnv, root: Path) -> None:
    repo, env = workspace(cli, root, aimterm_offline_env)
    user_head = git(repo, "rev-parse", "HEAD")
    user_branch = git(repo, "branch", "--show-current")
    plan = plan_from_data(plan_data(cli, env))
    runner = PlanRun(plan, repo=repo, state_dir=root / "state")
    t0 = time.monotonic()
    result = run_plan(runner)
    timings(cli, result, time.monotonic() - t0)

    assert result.status == "succeeded", result.to_dict()
    assert {s.step_id: s.state for s in result.steps} == dict.fromkeys(NAMES, "succeeded"), \
        result.to_dict()
    assert all(s.attempts == 1 for s in result.steps), result.to_dict()
    assert result.integration == INTEGRATION
    assert result.head == git(repo, "rev-parse", INTEGRATION)
    # The model was asked for each step's edit, and answered it.
    for name in NAMES:
        assert any(r.prompt == PROMPTS[name] and (r.answer_kind == "tool_call"
                                                  or r.answer.startswith("Done."))
                   for r in aimterm_fake_model.model_requests()), name
    # Every step merged --no-ff: a merge commit with two parents, charlie's on top of both.
    merges = {}
    for name in NAMES:
        merge = result.step(name).merge_commit
        assert merge is not None, result.to_dict()
        parents = git(repo, "rev-list", "--parents", "-n1", merge).split()[1:]
        assert len(parents) == 2, (name, parents)
        assert git(repo, "log", "-1", "--format=%s", merge) == f"Merge aimterm/{PLAN_ID}/{name}"
        merges[name] = merge
    log = git(repo, "log", "--first-parent", "--format=%H", INTEGRATION).splitlines()
    assert log[0] == merges["charlie"]
    assert set(log[1:3]) == {merges["alpha"], merges["bravo"]}
    # On the integration branch all three files say what they should, and the acceptance
    # commands pass again in a checkout of it.
    for name in NAMES:
        assert git(repo, "show", f"{INTEGRATION}:{name}.txt") == f"NEW-{name.upper()}"
    # Only those: nothing the tool wrote for itself was committed.
    assert git(repo, "ls-tree", "-r", "--name-only", INTEGRATION).splitlines() == [
        f"{name}.txt" for name in NAMES]
    checkout = root / "check"
    git(repo, "worktree", "add", "--detach", str(checkout), INTEGRATION)
    try:
        for name in NAMES:
            subprocess.run(check(name), shell=True, cwd=checkout, check=True, timeout=30)
    finally:
        git(repo, "worktree", "remove", "--force", str(checkout))
    # The user's checkout is untouched; the merged steps' worktrees are gone.
    assert git(repo, "rev-parse", "HEAD") == user_head
    assert git(repo, "branch", "--show-current") == user_branch
    assert git(repo, "status", "--porcelain") == ""
    for name in NAMES:
        assert (repo / f"{name}.txt").read_text() == "old\n"
    assert result.kept_worktrees == []
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1

