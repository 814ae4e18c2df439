"""The real Gemini CLI under aimterm, pointed at the fake model server (127.0.0.1 only).

Skipped when the CLI is not installed (``scripts/install-agent-clis``). Each instance gets a
throwaway HOME whose ``~/.gemini`` holds the offline configuration: API-key auth pre-selected,
the working folder pre-trusted, auto-update, usage statistics and telemetry off. That
configuration lives in ``aimterm.testing.offline`` (the plugin's ``aimterm_offline_env``), not
in the adapter, which takes whatever the user has set up.

Run with ``-s`` to see the timings (time to IDLE per instance, turn overhead beyond the fake
model's think delay).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
from pathlib import Path

import psutil
import pytest

from aimterm.adapter.registry import load_adapter
from aimterm.adapter.spec import AdapterSpec
from aimterm.events import Event, QuestionAnswered, QuestionPending, StateChanged
from aimterm.pool import GroupSpec, InstanceSetup, Pool
from aimterm.records import gemini as gemini_records
from aimterm.session import Session, Turn, TurnStatus
from aimterm.testing import FakeModel, ToolCall
from aimterm.testing.clis import find_cli
from aimterm.testing.plugin import OfflineEnv
from tests.helpers import extended_adapter

pytestmark = pytest.mark.skipif(
    find_cli("gemini") is None,
    reason="the Gemini CLI is not installed (scripts/install-agent-clis installs it)")

THINK_S = 0.3
# Plain words only: Gemini renders the model's text as markdown, so the fake replies
# ("FAKE-REPLY <sha1>: <prompt>") must not contain *, _, `, # or list markers to come back
# character for character.
PROMPTS = [f"tell me one fact about topic {name}" for name in (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")]
EDIT_PROMPT = "please create notes.txt with a greeting"
EDIT_CONTENT = "hello from the fake model\n"
SHELL_PROMPT = "please run the toucher command"
SHELL_COMMAND = "touch shell_ran.txt"  # not read-only: Gemini asks before running it (ls would not)

# The built-in adapter approves nothing; this fleet approves edits inside the working tree.
# The approval box's header line is "│ ? WriteFile  Writing to <path>" (or "│ ? Edit  <path>: …")
# with the path relative to the workspace; "1" picks "Allow once".
FLEET_ADAPTER = r"""
name: gemini-fleet
extends: gemini
answers:
  - name: edit-in-tree
    match: '(?s)^│ \? (?:WriteFile|Edit)\s+(?:Writing to )?(?P<file>[^\s:│]+).*?Apply this change\?'
    when: {file: '^(?!/)(?!\.\./)(?!\.\.$)'}
    send: "1"
"""


pytestmark = [pytestmark, pytest.mark.aimterm_fake_model(
    think_s=THINK_S, prompts=PROMPTS + [EDIT_PROMPT, SHELL_PROMPT],
    tool_calls={"create notes.txt": ToolCall(kind="edit", path="notes.txt", content=EDIT_CONTENT),
                "run the toucher": ToolCall(kind="shell", command=SHELL_COMMAND)})]


def fleet_adapter(tmp_path: Path) -> AdapterSpec:
    return extended_adapter(FLEET_ADAPTER, str(tmp_path / "gemini-fleet.yaml"))


def test_pool_of_three(aimterm_fake_model: FakeModel, aimterm_offline_env: OfflineEnv,
                       tmp_path: Path) -> None:
    fake = aimterm_fake_model

    def setup(iid: str, index: int) -> InstanceSetup:
        root = tmp_path / iid
        cwd = root / "work"
        cwd.mkdir(parents=True)
        # API-key auth pre-selected and the working folder pre-trusted: no start-up dialog.
        env = aimterm_offline_env("gemini", root / "home", trust=[cwd])
        return InstanceSetup(cwd=str(cwd), env=env)

    spec = fleet_adapter(tmp_path)
    pool = Pool([GroupSpec(spec, count=3, setup=setup)])
    events: list[Event] = []
    pool.bus.subscribe(events.append)
    stops: dict[str, str] = {}
    try:
        started = time.monotonic()
        pool.start(timeout=90)
        ready = {e.instance: e.mono - started for e in events
                 if isinstance(e, StateChanged) and e.old == "starting" and e.new == "idle"}
        assert sorted(ready) == ["gemini-fleet-1", "gemini-fleet-2", "gemini-fleet-3"]
        for iid, secs in sorted(ready.items()):
            print(f"\n{iid}: IDLE {secs:.2f} s after start")

        # (a) ten prompts routed over the fleet: every reply back, none lost.
        futures = {p: pool.submit(p) for p in PROMPTS}
        try:
            turns = {p: f.result(60) for p, f in futures.items()}
        except Exception:
            for inst in pool.instances():
                print(inst.id, inst.state, inst.pending and inst.pending.prompt)
                print("\n".join(inst.session.terminal.tail(20)))
            for e in events:
                print(e)
            raise
        overheads = []
        for prompt, turn in turns.items():
            assert turn.status is TurnStatus.DONE, (prompt, turn.error)
            assert turn.reply == fake.expected_reply(prompt), turn.reply
            calls = [r for r in fake.requests if r.prompt == prompt and r.answer_kind]
            think = THINK_S * len(calls)
            overheads.append((turn.total_ms or 0) / 1000 - think)
            print(f"{turn.instance}: {prompt!r}: {turn.total_ms:.0f} ms "
                  f"({len(calls)} model calls, {think:.1f} s thinking), "
                  f"submit->busy {turn.submit_to_busy_ms:.0f} ms, {turn.retries} re-sends")
        assert len({t.instance for t in turns.values()}) == 3
        print(f"turn overhead beyond think delay: min {min(overheads) * 1000:.0f} ms, "
              f"mean {sum(overheads) / len(overheads) * 1000:.0f} ms, "
              f"max {max(overheads) * 1000:.0f} ms")

        # (b) a file edit: the fleet's rule approves it, the file is really written.
        turn = pool.submit(EDIT_PROMPT).result(60)
        assert turn.status is TurnStatus.DONE, turn.error
        assert [a.rule for a in turn.answered] == ["edit-in-tree"]
        assert "notes.txt" in turn.answered[0].question
        written = Path(pool.instance(turn.instance).cwd or "") / "notes.txt"
        assert written.read_text() == EDIT_CONTENT
        print(f"edit turn reply: {turn.reply!r}")
        assert turn.reply == fake.expected_reply(EDIT_PROMPT)
        edits = [r for r in fake.requests if r.prompt == EDIT_PROMPT and r.tool_name]
        assert [r.tool_name for r in edits] == ["write_file"]

        # (c) a shell command: no rule answers it, so the instance waits for a person.
        mark = len(events)
        future = pool.submit(SHELL_PROMPT)
        deadline = time.monotonic() + 30
        pending: list[QuestionPending] = []
        while not pending and time.monotonic() < deadline:
            time.sleep(0.05)
            pending = [e for e in events[mark:] if isinstance(e, QuestionPending)]
        assert pending, "no QuestionPending for the shell command"
        question = pending[0]
        assert SHELL_COMMAND in question.question and question.rule == "tool-confirm"
        inst = pool.instance(question.instance)
        assert inst.state.value == "waiting" and not future.done()
        ran = Path(inst.cwd or "") / "shell_ran.txt"
        assert not ran.exists()
        pool.answer(question.instance, "1")  # "1. Allow once"
        turn = future.result(60)
        assert turn.status is TurnStatus.DONE, turn.error
        assert ran.exists()
        assert [a.rule for a in turn.answered] == ["caller"]
        print(f"shell turn reply: {turn.reply!r}")
        assert turn.reply == fake.expected_reply(SHELL_PROMPT)
        assert not [e for e in events if isinstance(e, QuestionAnswered) and e.rule != "caller"
                    and SHELL_COMMAND in e.question]
    finally:
        # (d) shutdown: every instance quits through its exit keys (/quit), exit code 0.
        instances = pool.instances()
        pids = [i.session.pid for i in instances if i.session.pid]
        for inst in instances:
            original = inst.session.stop

            def stop(*args: object, _orig=original, _iid=inst.id, **kw: object) -> str:
                stops[_iid] = _orig(*args, **kw)  # type: ignore[arg-type]
                return stops[_iid]

            inst.session.stop = stop  # type: ignore[method-assign]
        began = time.monotonic()
        pool.shutdown()
        print(f"shutdown of {len(instances)} instances: {time.monotonic() - began:.2f} s")
    assert stops == {i.id: "keys" for i in instances}, stops
    for inst in instances:
        assert inst.session.exit_code == 0 and inst.session.exit_signal is None
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_first_run_dialogs(aimterm_fake_model: FakeModel, aimterm_offline_env: OfflineEnv,
                           tmp_path: Path) -> None:
    """A fresh HOME with only the offline switches: trust folder (Gemini restarts itself),
    auth method and the pre-filled key box are all answered by the built-in start-up rules."""
    fake = aimterm_fake_model
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = aimterm_offline_env("gemini", tmp_path / "home", select_auth=False)
    conf = Path(env["HOME"]) / ".gemini"
    session = Session(load_adapter("gemini"), cwd=cwd, env=env)
    answered: list[str] = []
    session.subscribe(lambda e: answered.append(e.rule)
                      if isinstance(e, QuestionAnswered) else None)
    started = time.monotonic()
    try:
        session.start(timeout=60)
        print(f"\nfirst run: IDLE {time.monotonic() - started:.2f} s after start "
              f"(dialogs {answered})")
        assert session.state.value == "idle"
        # Each dialog is answered in turn, never again once the next one came: the trust
        # dialog, answered by the process that then restarted, stays on screen above the new
        # one's UI but no longer counts. (A dialog still there ANSWER_RETRY_S after its answer
        # is answered again, by design: on a loaded machine Gemini can drop keys that arrive
        # before its input handler is up. So a rule may repeat, but only back to back.)
        distinct = [rule for i, rule in enumerate(answered) if i == 0 or answered[i - 1] != rule]
        assert distinct == ["trust-folder", "auth-method", "api-key"]
        assert len(answered) <= len(distinct) + 2, answered
        turn = session.send(PROMPTS[0], timeout=30)
        assert turn.status is TurnStatus.DONE, turn.error
        assert turn.reply == fake.expected_reply(PROMPTS[0])
    finally:
        # (Outside the try's assertions: a failed start-up has already stopped the session,
        # and its error must not be hidden behind this one.)
        how = session.stop()
    assert how == "keys"
    assert session.exit_code == 0
    assert json.loads((conf / "trustedFolders.json").read_text()) == {str(cwd): "TRUST_FOLDER"}
    assert os.path.exists(conf / "settings.json")


# -- replies from Gemini's own record (reply: {record: gemini}) --------------------------------
#
# The adapter reads each turn's reply, and its tokens, from the instance's own session file
# (pinned with --session-id): the model's text exactly, markdown and all, at every size. The
# screen stays the fallback. These tests have a fake model of their own (the closest marker
# wins), whose replies use what Gemini's renderer would change: backticks, bold, a fenced
# block, lines longer than any terminal, several scripts and emoji.

REC_SHORT = "say hi in one short line"
REC_LONG = ('Please review this: "quoted words" and \'single quotes\', the `inline code` bits, '
            'Ελληνικά κείμενα εδώ, русский текст тоже, 日本語のテキストと中文字符, العربية أيضا, '
            'emoji 🚀🎉😀 and more plain words to make the prompt long enough that it wraps over '
            'several lines at every terminal width we try, ending here.')
REC_MULTI = "first line of a multi-line prompt\nsecond line with `code`\nthird line, the end"
REC_MD = "give me the markdown plan"
REC_EDIT = "please create notes.txt with a greeting"
REC_MD_TEXT = (
    "Here is the plan:\n\n1. Run `make test` first — it takes a while, so be patient with it and "
    "do not interrupt the run even when it seems stuck on the slowest of the integration "
    "suites.\n2. Then read **the log** and `grep -n FAIL log.txt`.\n\n```python\n"
    "print('hello')   # keep indentation\n```\n\nDone: *nothing* else to do.")


def record_reply(prompt: str) -> str:
    if prompt == REC_MD:
        return REC_MD_TEXT
    if prompt == REC_LONG:
        return "Echo: " + REC_LONG
    return f"FAKE-REPLY: {prompt}"


RECORD_MODEL = pytest.mark.aimterm_fake_model(
    think_s=0.2, reply=record_reply,
    prompts=[REC_SHORT, REC_LONG, REC_MULTI, REC_MD, REC_EDIT],
    tool_calls={"create notes.txt": ToolCall(kind="edit", path="notes.txt",
                                             content=EDIT_CONTENT)})


def sized_adapter(tmp_path: Path, rows: int, cols: int) -> AdapterSpec:
    text = f"name: gemini-{rows}x{cols}\nextends: gemini\nterminal: {{rows: {rows}, cols: {cols}}}\n"
    return extended_adapter(text, tmp_path / f"gemini-{rows}x{cols}.yaml")


def record_session(spec: AdapterSpec | str, env: dict[str, str], cwd: Path, **kw: object) -> Session:
    return Session(spec if isinstance(spec, AdapterSpec) else load_adapter(spec), cwd=cwd,
                   env=env, **kw)  # type: ignore[arg-type]


def run_turn(session: Session, prompt: str) -> Turn:
    """One turn, bounded; an edit approval (the built-in adapter asks) is allowed once."""
    turn = session.send(prompt, timeout=60)
    if turn.status is TurnStatus.WAITING:
        session.answer("1")
        turn = session.wait_turn(60)
    assert turn.status is TurnStatus.DONE, (prompt, turn.error)
    return turn


def assert_from_record(turn: Turn, fake: FakeModel) -> None:
    assert turn.reply == fake.expected_reply(turn.prompt), turn.reply
    assert turn.reply_source == "record"
    assert turn.tokens["input"] > 0 and turn.tokens["output"] > 0
    assert turn.tokens["total"] >= turn.tokens["input"] + turn.tokens["output"]
    assert turn.cost_usd is None  # Gemini records no cost


@RECORD_MODEL
def test_record_replies_two_instances_one_folder(aimterm_fake_model: FakeModel,
                                                  aimterm_offline_env: OfflineEnv,
                                                  tmp_path: Path) -> None:
    """40x120 (the adapter's size): a short prompt, a long one in several scripts, a
    multi-line one, a markdown reply and an approved edit, in one session; meanwhile a second
    instance in the same folder and HOME has turns of its own. Each reply is the model's text
    from the instance's own record."""
    fake = aimterm_fake_model
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = aimterm_offline_env("gemini", tmp_path / "home", trust=[cwd])
    env["COLORTERM"] = ""  # plain 256 colours (the sized test below takes true colour)
    a, b = (record_session("gemini", env, cwd, instance_id=f"gemini-{n}") for n in "ab")
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(s.start, timeout=90) for s in (a, b)]:
            done.result()
    print(f"\ntwo instances IDLE after {time.monotonic() - started:.2f} s")
    try:
        other = b.submit(REC_MD)
        for prompt in (REC_SHORT, REC_LONG, REC_MULTI, REC_MD, REC_EDIT):
            turn = run_turn(a, prompt)
            assert_from_record(turn, fake)
            print(f"a: {prompt[:30]!r}: {turn.total_ms:.0f} ms, tokens {turn.tokens}")
        assert (cwd / "notes.txt").read_text() == EDIT_CONTENT
        assert_from_record(other.result(60), fake)
        assert_from_record(run_turn(b, REC_SHORT), fake)
    finally:
        a.stop()
        b.stop()
    files = sorted((tmp_path / "home" / ".gemini" / "tmp").glob("*/chats/session-*.jsonl"))
    assert len(files) == 2  # one session, hence one file, per instance


@RECORD_MODEL
@pytest.mark.parametrize(("rows", "cols"), [(24, 80), (50, 200)])
def test_record_replies_at_size(aimterm_fake_model: FakeModel, aimterm_offline_env: OfflineEnv,
                                tmp_path: Path, rows: int, cols: int) -> None:
    """The size given through the adapter; a true-colour terminal (the screen then draws ▄/▀
    bands around the prompt): the record's replies do not depend on either."""
    fake = aimterm_fake_model
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = aimterm_offline_env("gemini", tmp_path / "home", trust=[cwd])
    env["COLORTERM"] = "truecolor"
    session = record_session(sized_adapter(tmp_path, rows, cols), env, cwd)
    session.start(timeout=90)
    try:
        assert (session.rows, session.cols) == (rows, cols)
        for prompt in (REC_SHORT, REC_LONG, REC_MD):
            assert_from_record(run_turn(session, prompt), fake)
    finally:
        session.stop()


@RECORD_MODEL
def test_screen_fallback_when_the_record_is_out_of_reach(
        aimterm_fake_model: FakeModel, aimterm_offline_env: OfflineEnv, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorder looks in a folder that does not exist: the replies come from the screen
    (24x80, true colour: the case whose replies opened with the ▄/▀ bands), and say so."""
    fake = aimterm_fake_model
    monkeypatch.setattr(gemini_records, "gemini_homes", lambda env: [tmp_path / "nowhere"])
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = aimterm_offline_env("gemini", tmp_path / "home", trust=[cwd])
    env["COLORTERM"] = "truecolor"
    session = record_session(sized_adapter(tmp_path, 24, 80), env, cwd)
    session.start(timeout=90)
    try:
        for prompt in (REC_SHORT, REC_EDIT):
            turn = run_turn(session, prompt)
            assert turn.reply_source == "screen" and turn.tokens == {}
            assert turn.reply == fake.expected_reply(prompt), turn.reply
        turn = run_turn(session, REC_LONG)
        assert turn.reply_source == "screen"
        # The echo is gone however it wrapped; the rest is as rendered (no backticks, wrapped).
        assert turn.reply.startswith("Echo: Please review this"), turn.reply
        assert not any(set(line) <= set("▄▀") for line in turn.reply.splitlines() if line)
    finally:
        session.stop()


@RECORD_MODEL
def test_resume_reads_the_same_record(aimterm_fake_model: FakeModel,
                                      aimterm_offline_env: OfflineEnv, tmp_path: Path) -> None:
    """A restart with the adapter's resume arguments (--resume latest; --session-id cannot go
    with it): Gemini continues the session in the same file, which the instance's recorder
    follows from the id it kept beside its transcript."""
    fake = aimterm_fake_model
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = aimterm_offline_env("gemini", tmp_path / "home", trust=[cwd])
    session = record_session("gemini", env, cwd, transcript=tmp_path / "gemini.cast")
    session.start(timeout=90)
    try:
        assert session.terminal is not None and "--session-id" in session.terminal.argv
        first = run_turn(session, REC_SHORT)
        assert_from_record(first, fake)
        assert session.stop() == "keys"
        session.resume = True
        session.start(timeout=90)
        assert session.terminal.argv[1:] == ["--resume", "latest"]
        turn = run_turn(session, REC_SHORT)  # the same prompt: this turn's, not the first's
        assert_from_record(turn, fake)
        assert turn.tokens["input"] > first.tokens["input"]  # the conversation went on
    finally:
        session.stop()
    # Both turns went to the first file (a resumed start also leaves a new one with no turn).
    files = (tmp_path / "home" / ".gemini" / "tmp").glob("*/chats/*.jsonl")
    prompts = [[ln for ln in f.read_text().splitlines()
                if ln.startswith('{"id"') and f'[{{"text":"{REC_SHORT}"}}]' in ln] for f in files]
    assert sorted(len(p) for p in prompts)[-1] == 2
