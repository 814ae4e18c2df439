"""The built-in aider adapter against the real aider CLI, pointed at the fake model server.

Each instance gets a throwaway HOME holding the offline configuration (``.aider.conf.yml``
pointing at the fake server, a fresh model price list so nothing is fetched, a git identity:
``aimterm.testing.offline``, through the plugin's ``aimterm_offline_env``) and its own git
repository as its working directory. The adapter itself knows nothing about
models or endpoints: this configuration is what a user's own setup would provide.

aider does not use tool calls: it applies the edit blocks it finds in the model's *text*, in
the edit format it announces at start ("whole" for a model it does not know: the file name on
a line, then the whole file in a fence). So edits are scripted with a ``reply=`` function.

Run with ``-s`` to see the time to IDLE per instance and the turn overhead.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from aimterm.adapter.spec import AdapterSpec
from aimterm.events import Event, ProcessExited, QuestionPending, StateChanged
from aimterm.pool import GroupSpec, InstanceSetup, Pool
from aimterm.session import TurnStatus
from aimterm.states import State
from aimterm.testing.clis import find_cli
from aimterm.testing.fakemodel import FakeModel, default_reply
from aimterm.testing.offline import git_workdir
from aimterm.testing.plugin import OfflineEnv
from tests.helpers import extended_adapter

pytestmark = pytest.mark.skipif(
    find_cli("aider") is None,
    reason="aider is not installed (run scripts/install-agent-clis to put it in "
           "~/.cache/aimterm/clis/bin)")

THINK_S = 0.3
MODEL = "fake-model"
PROMPTS = [f"Route check {word} for the aider fleet" for word in
           ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
            "juliet")]
# (b) the reply is a "whole" format edit block creating a new file: aider asks "Create new
# file?" and the fleet's rule approves it because the path is inside the working tree.
EDIT_PROMPT = "Please create the greeting file now"
EDIT_FILE = "greeting.txt"
EDIT_CONTENT = "Hello from the fake model"
# (c) the reply names a file of the repository that is not in the chat: aider asks "Add file
# to the chat?", which no rule answers.
MENTION_PROMPT = "Where does the hello helper live"
MENTIONED = "hello_util.py"


def fake_reply(prompt: str) -> str:
    # Plain words only: aider renders replies as markdown, which would eat *, _ or `.
    if prompt == EDIT_PROMPT:
        return f"{EDIT_FILE}\n```\n{EDIT_CONTENT}\n```"
    if prompt == MENTION_PROMPT:
        return f"The helper lives in {MENTIONED} at the top of the repository."
    return default_reply(prompt)


# One rule on top of the built-in adapter: approve edits (a new file, or a file not yet in the
# chat) whose path stays inside the working tree (not absolute, no "~", no ".." segment).
# aider prints the path on the line above the question.
EDIT_MATCH = (r"^(?P<file>\S[^\n]*)\n(?:Create new file|Allow edits to file that has not been added"
              r" to the chat)\? \(Y\)es/\(N\)o[^\n]*\]: ?$")
FLEET_YAML = r"""
name: aider-fleet
extends: aider
answers:
  - name: edit-in-tree
    region: cursor:2
    match: 'EDIT_MATCH'
    when: {file: '^(?!/)(?!~)(?!(?:.*/)?\.\.(?:/|$))'}
    send: ['y', enter]
""".replace("EDIT_MATCH", EDIT_MATCH)


def fleet_adapter() -> AdapterSpec:
    return extended_adapter(FLEET_YAML, "aider-fleet.yaml")


def make_instance_dir(root: Path, offline: OfflineEnv) -> InstanceSetup:
    """A throwaway HOME with aider's offline configuration and a git repository to work in."""
    env = offline("aider", root / "home", model=MODEL)
    # No .gitignore: aider asks to add ".aider*" to it at every start, and the built-in
    # adapter's startup dialog declines (the user's repository is left alone).
    repo = git_workdir(root / "repo", files={MENTIONED: "def hello():\n    return 'hi'\n"},
                       commit=True, env=env)
    return InstanceSetup(cwd=str(repo), env=env)


@pytest.mark.aimterm_fake_model(think_s=THINK_S, model=MODEL, reply=fake_reply,
                                prompts=[*PROMPTS, EDIT_PROMPT, MENTION_PROMPT])
def test_aider_fleet(aimterm_fake_model: FakeModel, aimterm_offline_env: OfflineEnv,
                     tmp_path: Path) -> None:
    fake = aimterm_fake_model
    events: list[Event] = []
    question = threading.Event()

    def listen(event: Event) -> None:
        events.append(event)
        if isinstance(event, QuestionPending):
            question.set()

    def setup(instance_id: str, index: int) -> InstanceSetup:
        return make_instance_dir(tmp_path / instance_id, aimterm_offline_env)

    pool = Pool([GroupSpec(fleet_adapter(), count=3, setup=setup)])
    pool.bus.subscribe(listen)
    pids: list[int] = []
    try:
        t0 = time.monotonic()
        pool.start(wait=True, timeout=90)
        ids = sorted(i.id for i in pool.instances())
        assert len(ids) == 3 and all(i.state is State.IDLE for i in pool.instances())
        pids = [i.session.pid or 0 for i in pool.instances()]
        # Time to IDLE: from the instance's start to its first IDLE.
        ready: dict[str, float] = {}
        started: dict[str, float] = {}
        for e in events:
            if isinstance(e, StateChanged) and e.new == "starting":
                started.setdefault(e.instance, e.mono)
            if isinstance(e, StateChanged) and e.new == "idle":
                ready.setdefault(e.instance, e.mono)
        version = subprocess.run([find_cli("aider") or "aider", "--version"],
                                 capture_output=True, text=True).stdout.strip()
        print(f"\n{version}")
        print(f"pool ready in {time.monotonic() - t0:.2f} s")
        for iid in ids:
            print(f"  {iid}: time to IDLE {ready[iid] - started[iid]:.2f} s")
        # The startup dialog (".gitignore") was declined by the built-in rule on every instance.
        declined = {e.instance for e in events
                    if getattr(e, "rule", None) == "gitignore" and e.kind == "question_answered"}
        assert declined == set(ids)

        # (a) ten prompts through the router: every reply exact, none lost.
        futures = [pool.submit(p) for p in PROMPTS]
        turns = [f.result(120) for f in futures]
        for prompt, turn in zip(PROMPTS, turns, strict=True):
            assert turn.status is TurnStatus.DONE, (prompt, turn.error)
            assert turn.reply == fake.expected_reply(prompt), (prompt, turn.reply)
            assert turn.metrics.get("tokens", {}).get("received"), turn.metrics
            assert "cost" in turn.metrics
        assert {t.instance for t in turns} == set(ids)
        seen = [r.prompt for r in fake.model_requests()]
        assert sorted(p for p in seen if p in PROMPTS) == sorted(PROMPTS)
        overheads = sorted((t.total_ms or 0) / 1000 - THINK_S for t in turns)
        first: dict[str, float] = {}
        later: list[float] = []
        for t, extra in zip(turns, [(t.total_ms or 0) / 1000 - THINK_S for t in turns],
                            strict=True):
            if t.instance in first:
                later.append(extra)
            else:
                first[t.instance] = extra
        later.sort()
        print(f"turn overhead beyond the {THINK_S} s think delay: "
              f"median {overheads[len(overheads) // 2]:.2f} s, max {overheads[-1]:.2f} s; "
              f"first turn per instance {', '.join(f'{v:.2f}' for v in first.values())} s; "
              f"later turns median {later[len(later) // 2]:.2f} s")

        # (b) an edit: "Create new file?" is approved by the fleet's rule; the file exists.
        turn = pool.submit(EDIT_PROMPT).result(60)
        assert turn.status is TurnStatus.DONE, turn.error
        assert [a.rule for a in turn.answered] == ["edit-in-tree"]
        assert EDIT_FILE in turn.answered[0].question
        created = Path(pool.instance(turn.instance).cwd or "") / EDIT_FILE
        assert created.read_text().strip() == EDIT_CONTENT
        assert EDIT_CONTENT in turn.reply
        print(f"edit turn on {turn.instance}: {turn.total_ms:.0f} ms, created {created.name}")

        # (c) a question no rule answers: WAITING, named by a QuestionPending event; answered
        # through the pool, the turn completes (aider then tells the model the file was added
        # and the model answers once more).
        future = pool.submit(MENTION_PROMPT)
        assert question.wait(60), "no QuestionPending event"
        pending = next(e for e in events if isinstance(e, QuestionPending))
        assert "Add file to the chat?" in pending.question and MENTIONED in pending.question
        assert pool.instance(pending.instance).state is State.WAITING
        assert not future.done()
        # Answer as a person would, a moment later (an answer written while aider is still
        # drawing the question is re-detected as a new question: see the report).
        time.sleep(0.3)
        pool.answer(pending.instance, ["y", "enter"])
        turn = future.result(60)
        assert turn.status is TurnStatus.DONE, turn.error
        assert turn.instance == pending.instance
        assert [a.rule for a in turn.answered][:1] == ["caller"]
        assert f"The helper lives in {MENTIONED}" in turn.reply
        assert "Tokens:" not in turn.reply and "(Y)es/(N)o" not in turn.reply
        print(f"question turn on {turn.instance}: {turn.total_ms:.0f} ms "
              f"(question: {pending.question!r})")
    finally:
        t1 = time.monotonic()
        pool.shutdown(timeout=30)
        print(f"shutdown in {time.monotonic() - t1:.2f} s")

    # (d) every instance quit through "/exit" (exit code 0, no signal) and nothing is left.
    exits = {e.instance: e for e in events if isinstance(e, ProcessExited)}
    assert set(exits) == set(ids)
    for e in exits.values():
        assert e.returncode == 0 and e.signal is None, e
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
