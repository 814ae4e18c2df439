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

import json
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from aimterm.adapter.spec import AdapterSpec
from aimterm.events import Event, ProcessExited, QuestionPending, StateChanged
from aimterm.pool import GroupSpec, InstanceSetup, Pool
from aimterm.records.aider import parse_count
from aimterm.session import Session, Turn, TurnStatus
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


# -- replies from aider's own record (reply.record: aider) -------------------------------------
#
# The adapter reads each turn's reply, tokens and cost from the instance's own chat history
# (and LLM log) in its private dir: the model's text exactly, markdown unrendered and lines
# unwrapped. Each size runs two instances side by side: one with its record, one whose record
# is hidden (its chat history path is a folder, so aider cannot write it and the reader finds
# nothing): that one falls back to the screen, whose cut must hold no echo and no chrome.

SIZES = [(24, 80), (40, 120), (50, 200)]
SHORT = "Record check for the aider adapter"
LONG = ('Quote test: "double quotes", \'single quotes\', `inline code` and ``double ticks``; '
        'Ελληνικά κείμενα, русский текст, 日本語のテキスト, العربية, हिन्दी; emoji 🚀🎉👍 '
        'and a path like /usr/local/bin/aider --flag=value, plus more words to make this '
        'prompt longer than three hundred characters in all, ok?')
MULTI = "First line of a multi-line prompt\nsecond line with `code`\nthird line"
MD_PROMPT = "Show me some markdown"
MD = ("Here is a **bold** answer with `inline code` and a long line that goes well beyond the "
      "width of an eighty column terminal, so the TUI has to wrap it when it renders it.\n\n"
      "> a quoted line\n\n- item one with `x = 1`\n- item two\n\nLast paragraph: call `main()`.")
NOTES_PROMPT = "Write the notes file and explain it"
NOTES = ("I will write the notes file.\n\nnotes.txt\n```\nRemember the `milk`\n```\n\n"
         "The notes file now holds one reminder.")
RECORD_PROMPTS = [SHORT, LONG, MULTI, MD_PROMPT, NOTES_PROMPT]


def record_reply(prompt: str) -> str:
    return {MD_PROMPT: MD, NOTES_PROMPT: NOTES}.get(prompt) or default_reply(prompt)


def sized_adapter(rows: int, cols: int, folder: Path) -> AdapterSpec:
    # The fleet's edit rule (notes.txt is a new file in the tree) at the given size.
    text = FLEET_YAML.replace("name: aider-fleet", "name: aider-sized") + \
        f"terminal: {{rows: {rows}, cols: {cols}}}\n"
    return extended_adapter(text, folder / "aider-sized.yaml")


def hidden_record_session(spec: AdapterSpec, setup: InstanceSetup, folder: Path) -> Session:
    """A session whose record aider cannot write: its chat history path is a folder."""
    transcript = folder / "aider-hidden.cast"
    (folder / "aider-hidden.record" / "aider.chat.history.md").mkdir(parents=True)
    return Session(spec, instance_id="aider-hidden", cwd=setup.cwd, env=setup.env,
                   transcript=str(transcript))


def start_all(*sessions: Session) -> None:
    for s in sessions:
        s.start(wait=False)
    for s in sessions:
        assert s.wait_state(State.IDLE, timeout=90) is State.IDLE, s.screen_text()


def screen_tokens(turn: Turn) -> dict[str, int]:
    got = turn.metrics.get("tokens", {})
    return {"input": parse_count(got["sent"]), "output": parse_count(got["received"])}


@pytest.mark.aimterm_fake_model(think_s=0.1, model=MODEL, reply=record_reply,
                                prompts=RECORD_PROMPTS)
@pytest.mark.parametrize(("rows", "cols"), SIZES, ids=[f"{r}x{c}" for r, c in SIZES])
def test_aider_replies_from_its_record_and_the_screen(
        rows: int, cols: int, aimterm_fake_model: FakeModel, aimterm_offline_env: OfflineEnv,
        tmp_path: Path) -> None:
    fake = aimterm_fake_model
    spec = sized_adapter(rows, cols, tmp_path)
    assert spec.reply.record == "aider"
    rec_setup = make_instance_dir(tmp_path / "rec", aimterm_offline_env)
    rec = Session(spec, instance_id="aider-rec", cwd=rec_setup.cwd, env=rec_setup.env)
    scr = hidden_record_session(spec, make_instance_dir(tmp_path / "scr", aimterm_offline_env),
                                tmp_path)
    try:
        t0 = time.monotonic()
        start_all(rec, scr)
        for prompt in RECORD_PROMPTS:
            want = fake.expected_reply(prompt)
            futures = [rec.submit(prompt), scr.submit(prompt)]
            got, fallback = (f.result(60) for f in futures)
            for turn in (got, fallback):
                assert turn.status is TurnStatus.DONE, (prompt, turn.error)
            # The record: the model's text exactly, and aider's own tokens and cost.
            assert got.reply_source == "record", (prompt, got.reply)
            assert got.reply == want, prompt
            assert got.tokens == screen_tokens(got) and got.tokens["output"] > 0
            assert got.cost_usd is not None and got.cost_usd > 0
            # The screen: the text as rich drew it, with no echo of the prompt and no chrome.
            assert fallback.reply_source == "screen"
            lines = fallback.reply.splitlines()
            assert fallback.reply.split()[:3] == want.replace("**", "").split()[:3], lines
            assert not any(line.startswith(("> ", "Tokens:", "─")) or "(Y)es/(N)o" in line
                           for line in lines), lines
            if prompt in (SHORT, LONG):
                assert lines == [want.replace("`", "").strip()], lines
            assert not fallback.tokens and fallback.cost_usd is None
        assert (Path(rec_setup.cwd) / "notes.txt").read_text().strip() == "Remember the `milk`"
        assert not (Path(rec_setup.cwd) / ".aider.chat.history.md").exists()
        print(f"\n{rows}x{cols}: {len(RECORD_PROMPTS)} turns on two instances in "
              f"{time.monotonic() - t0:.1f} s")
    finally:
        rec.stop()
        scr.stop()


ISOLATION = {iid: [f"Isolation check {n} for instance {iid}" for n in (1, 2)]
             for iid in ("aider-a", "aider-b")}
AFTER_RESUME = "Isolation check after the resume of instance aider-a"


@pytest.mark.aimterm_fake_model(think_s=0.1, model=MODEL,
                                prompts=[*ISOLATION["aider-a"], *ISOLATION["aider-b"],
                                         AFTER_RESUME])
def test_aider_instances_in_one_folder_read_only_their_own_record(
        aimterm_fake_model: FakeModel, aimterm_offline_env: OfflineEnv, tmp_path: Path) -> None:
    """Two instances sharing one folder and one HOME, turns interleaved: each reply is the
    instance's own; then one resumes its own conversation, not the other's."""
    fake = aimterm_fake_model
    setup = make_instance_dir(tmp_path, aimterm_offline_env)
    sessions = {iid: Session(fleet_adapter(), instance_id=iid, cwd=setup.cwd, env=setup.env,
                             transcript=str(tmp_path / "t" / f"{iid}.cast"))
                for iid in ISOLATION}
    a, b = sessions["aider-a"], sessions["aider-b"]
    try:
        start_all(a, b)
        for n in range(2):
            futures = {iid: s.submit(ISOLATION[iid][n]) for iid, s in sessions.items()}
            for iid, future in futures.items():
                turn = future.result(60)
                assert turn.status is TurnStatus.DONE, turn.error
                assert turn.reply_source == "record"
                assert turn.reply == fake.expected_reply(ISOLATION[iid][n])
        for iid in ISOLATION:
            own = (tmp_path / "t" / f"{iid}.record" / "aider.chat.history.md").read_text()
            assert all(f"#### {p}" in own for p in ISOLATION[iid])
            assert not any(p in own for other in ISOLATION if other != iid
                           for p in ISOLATION[other])
        assert not (Path(setup.cwd) / ".aider.chat.history.md").exists()
        # Resume: aider reads back the instance's own chat history.
        a.stop()
        a.resume = True
        a.start(timeout=90)
        turn = a.send(AFTER_RESUME, timeout=60)
        assert turn.reply_source == "record"
        assert turn.reply == fake.expected_reply(AFTER_RESUME)
        sent = json.dumps(fake.model_requests()[-1].body["messages"])
        assert all(p in sent for p in ISOLATION["aider-a"])
        assert not any(p in sent for p in ISOLATION["aider-b"])
    finally:
        for s in sessions.values():
            s.stop()
