"""The built-in ``codex`` adapter against the real Codex CLI, pointed at the fake model server.

Everything that makes codex work offline lives in each instance's throwaway HOME
(``aimterm.testing.offline``, through the plugin's ``aimterm_offline_env``), not in the
adapter: a custom model provider on the fake server (responses API), analytics, feedback,
update checks, plugins and the background daemon off. The approval policy is chosen so that
both kinds of confirmation show up: a read-only sandbox with ``on-request`` makes every edit
ask, and an exec-policy rule (``prefix_rule(..., decision="prompt")``) makes ``echo`` ask.

Run with ``-s`` to see the timings.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from aimterm.adapter.registry import load_adapter
from aimterm.events import Event, ProcessExited, QuestionAnswered, QuestionPending, StateChanged
from aimterm.pool import GroupSpec, InstanceSetup, Pool
from aimterm.records import codex as codex_records
from aimterm.records.codex import SESSION_FILE
from aimterm.session import Session, Turn, TurnStatus
from aimterm.states import State
from aimterm.testing.clis import find_cli
from aimterm.testing.fakemodel import FakeModel, ToolCall, default_reply
from aimterm.testing.offline import git_workdir
from aimterm.testing.plugin import OfflineEnv
from tests.helpers import CODEX_EDIT_QUESTION, extended_adapter, var_tmp_dir
from tests.helpers import fleet_result as result

CODEX = find_cli("codex")
pytestmark = pytest.mark.skipif(
    CODEX is None, reason="the Codex CLI is not installed (scripts/install-agent-clis installs it)")

THINK_S = 0.3
PROMPTS = [f"codex pool prompt {i}: say something short about the number {i}" for i in range(10)]
EDIT_PROMPT = "please create the notes file for the project"
EDIT_FILE = "notes.txt"
EDIT_CONTENT = "hello from the fake model"
SHELL_PROMPT = "please run the greeting command"
#: echo, so the approved command also runs in the read-only sandbox; its output comes back to
#: the model as the tool result, which the test reads from the fake server's request log.
SHELL_OUTPUT = "aimterm-shell-ok"
SHELL_COMMAND = f"echo {SHELL_OUTPUT}"
#: codex writes an agent message as "• text" (continuation lines indented two spaces); the
#: adapter's reply.trim cuts that gutter, so replies equal the model's text.
GUTTER = ""

# The HOMEs go under /var/tmp (tests.helpers.var_tmp_dir): codex will not run from /tmp.

# An older model name that has built-in metadata without "code mode": codex then declares the
# plain `exec_command` and `apply_patch` tools the fake model scripts calls for (the offline
# setup marks its one-time "try the new model" offer as seen).
MODEL = "gpt-5.5"
SETTINGS = 'approval_policy = "on-request"\nsandbox_mode = "read-only"\n'
RULES = 'prefix_rule(pattern = ["echo"], decision = "prompt")\n'
pytestmark = [pytestmark, pytest.mark.aimterm_fake_model(
    think_s=THINK_S, prompts=[*PROMPTS, EDIT_PROMPT, SHELL_PROMPT],
    tool_calls={EDIT_PROMPT: ToolCall(kind="edit", path=EDIT_FILE, content=EDIT_CONTENT),
                SHELL_PROMPT: ToolCall(kind="shell", command=SHELL_COMMAND)})]


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    yield from var_tmp_dir("codex")


def approving_adapter(root: Path):  # type: ignore[no-untyped-def]
    """The built-in adapter plus ONE answer rule: approve edits inside an instance's tree."""
    tree = re.escape(str(root)) + r"/inst-\d+/work/"
    edits = CODEX_EDIT_QUESTION
    text = textwrap.dedent(f"""\
        name: codex-approve-edits
        extends: codex
        answers:
          - name: edit-in-tree
            match: '{edits}'
            when: {{file: '^{tree}(?!.*\\.\\./)'}}
            send: "y"
        """)
    return extended_adapter(text, root / "codex-approve-edits.yaml")


def test_pool_of_three_codex_instances(aimterm_fake_model: FakeModel,
                                       aimterm_offline_env: OfflineEnv, root: Path) -> None:
    fake = aimterm_fake_model
    spec = approving_adapter(root)
    assert spec.answers and spec.answers[0].name == "edit-in-tree"

    def setup(iid: str, index: int) -> InstanceSetup:
        base = root / f"inst-{index}"
        env = aimterm_offline_env("codex", base / "home", model=MODEL, settings=SETTINGS,
                                  rules=RULES)
        return InstanceSetup(cwd=str(git_workdir(base / "work")), env=env)

    events: list[Event] = []
    lock = threading.Lock()

    def record(event: Event) -> None:
        with lock:
            events.append(event)

    pool = Pool([GroupSpec(spec, count=3, setup=setup)])
    pool.bus.subscribe(record)
    sessions = []
    pids: list[int] = []
    try:
        t0 = time.monotonic()
        pool.start(wait=True, timeout=90)
        ready_s = time.monotonic() - t0
        instances = pool.instances()
        sessions = [inst.session for inst in instances]
        pids = [s.pid for s in sessions if s.pid]
        assert [inst.state for inst in instances] == [State.IDLE] * 3, pool.status()
        # The trust-folder dialog came up on each fresh HOME and was answered at start-up.
        trusted = {e.instance for e in events
                   if isinstance(e, QuestionAnswered) and e.rule == "trust-folder"}
        assert trusted == {inst.id for inst in instances}
        version = subprocess.run([CODEX, "--version"], capture_output=True, text=True)
        print(f"\ncodex {version.stdout.strip()}")
        print(f"pool of 3 ready in {ready_s:.2f} s")
        for inst in instances:
            starting = next(e.mono for e in events if isinstance(e, StateChanged)
                            and e.instance == inst.id and e.new == "starting")
            idle = next(e.mono for e in events if isinstance(e, StateChanged)
                        and e.instance == inst.id and e.new == "idle")
            print(f"  {inst.id}: time to IDLE {(idle - starting) * 1000:.0f} ms")

        # (a) ten distinct prompts routed over the three instances, none lost.
        t1 = time.monotonic()
        futures = [pool.submit(p) for p in PROMPTS]
        turns = [result(pool, f, 60, fake) for f in futures]
        wall = time.monotonic() - t1
        for prompt, turn in zip(PROMPTS, turns, strict=True):
            assert turn.status is TurnStatus.DONE, (turn.to_dict(), pool.status())
            assert turn.reply_source == "record", turn.to_dict()
            assert turn.reply == GUTTER + fake.expected_reply(prompt), turn.to_dict()
            assert turn.reply.removeprefix(GUTTER) == fake.expected_reply(prompt)
        assert sorted(t.prompt for t in turns) == sorted(PROMPTS)
        per = collections.Counter(t.instance for t in turns)
        assert set(per) == {inst.id for inst in instances}, per
        asked = [r.prompt for r in fake.model_requests() if r.answer_kind == "text"]
        assert set(PROMPTS) <= set(asked)
        overheads = [t.busy_to_idle_ms / 1000 - THINK_S for t in turns if t.busy_to_idle_ms]
        submits = [t.submit_to_busy_ms for t in turns if t.submit_to_busy_ms is not None]
        print(f"10 prompts in {wall:.2f} s, per instance {dict(per)}")
        print(f"  submit->busy median {sorted(submits)[len(submits) // 2]:.0f} ms; busy->idle "
              f"beyond the {THINK_S:g} s think delay: median "
              f"{sorted(overheads)[len(overheads) // 2] * 1000:.0f} ms, max "
              f"{max(overheads) * 1000:.0f} ms (includes settle_ms={spec.settle_ms})")

        # (b) an edit: the confirmation is answered by the adapter's rule, the file is written.
        edit = result(pool, pool.submit(EDIT_PROMPT), 60)
        assert edit.status is TurnStatus.DONE, edit.to_dict()
        assert [a.rule for a in edit.answered] == ["edit-in-tree"], edit.to_dict()
        assert EDIT_FILE in edit.answered[0].question
        written = root / f"inst-{pool.instance(edit.instance).index}" / "work" / EDIT_FILE
        assert written.read_text().strip() == EDIT_CONTENT
        assert edit.reply == GUTTER + fake.expected_reply(EDIT_PROMPT), edit.to_dict()
        print(f"edit turn {edit.total_ms:.0f} ms, approved by rule edit-in-tree")

        # (c) a shell command: nobody approves it automatically; the session waits.
        pending_before = sum(isinstance(e, QuestionPending) for e in events)
        future = pool.submit(SHELL_PROMPT)
        deadline = time.monotonic() + 60
        question: QuestionPending | None = None
        while question is None and time.monotonic() < deadline:
            with lock:
                found = [e for e in events if isinstance(e, QuestionPending)]
            if len(found) > pending_before:
                question = found[-1]
            else:
                time.sleep(0.02)
        assert question is not None, pool.status()
        assert question.rule == "command-approval"
        assert SHELL_COMMAND in question.question
        waiting = pool.instance(question.instance)
        assert waiting.state is State.WAITING
        time.sleep(0.3)
        assert not future.done()
        pool.answer(question.instance, "y")
        shell = result(pool, future, 60)
        assert shell.status is TurnStatus.DONE, shell.to_dict()
        assert shell.instance == question.instance
        assert [a.rule for a in shell.answered] == ["caller"]
        outputs = [item.get("output", "") for r in fake.model_requests()
                   if r.prompt == SHELL_PROMPT and r.tool_result
                   for item in r.body.get("input", [])
                   if isinstance(item, dict) and item.get("type") == "function_call_output"]
        assert any("exited with code 0" in o and SHELL_OUTPUT in o.split("Output:", 1)[-1]
                   for o in outputs), outputs
        assert shell.reply == GUTTER + fake.expected_reply(SHELL_PROMPT), shell.to_dict()
        print(f"shell turn waited for approval, then done ({shell.total_ms:.0f} ms in all)")
    finally:
        t2 = time.monotonic()
        pool.shutdown(timeout=20)
        shutdown_s = time.monotonic() - t2

    # (d) every instance quit by its exit keys (/quit: exit code 0, no signal), none left.
    print(f"shutdown in {shutdown_s:.2f} s")
    for s in sessions:
        assert s.state is State.EXITED
        assert (s.exit_code, s.exit_signal) == (0, None), (s.id, s.exit_code, s.exit_signal)
    exits = [e for e in events if isinstance(e, ProcessExited)]
    assert sorted(e.instance for e in exits) == sorted(s.id for s in sessions)
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    leftovers = [p.info for p in psutil.process_iter(["pid", "cmdline"])
                 if any(str(root) in part for part in (p.info["cmdline"] or []))]
    assert not leftovers
    # daemon_auto_start = false kept codex from copying itself into each HOME.
    for inst_dir in root.glob("inst-*"):
        size = sum(f.stat().st_size for f in inst_dir.rglob("*") if f.is_file())
        assert size < 50 * 1024 * 1024, (inst_dir, size)
    assert not fake.errors
    assert os.path.isdir(root)


# -- replies from codex's own record (aimterm.records.codex) -----------------------------------

SHORT_PROMPT = "say hello in a few words"
LONG_PROMPT = ("Quote test: \"double\" and 'single' quotes, `backticks`, $dollar and \\backslash; "
               "Ελληνικά κείμενο, русский текст, 日本語のテキスト, العربية, עברית; emoji 🎉🚀✨ — "
               "a prompt long enough to wrap over several rows of the composer at 80 columns, "
               "and to come back exactly as typed.")
MULTI_PROMPT = "line one of a multi-line prompt\nline two, with `code`\n\nline four after a blank"
MD_PROMPT = "answer in markdown please"
MD_REPLY = ("A first paragraph with `inline code`, **bold** text and one line long enough to be "
            "wrapped by every terminal narrower than two hundred and fifty columns: alpha beta "
            "gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho.\n\n"
            "- a list item with `x = 1`\n- another item\n\n```python\nprint('hi')\n```\n\n"
            "The end.")
#: Long and wrapped on screen, with a short reply: the screen can then give it exactly.
ECHO_PROMPT = ("Echo test — «guillemets», `inline code`, 'quotes' and \"more quotes\"; Ελληνικά, "
               "кириллица, 中文字符, 한국어, emoji 🧪🔁; this one only wants a one-word answer "
               "but is long enough to wrap over four rows of an eighty-column composer.")
#: The same without backticks (codex's echo renders them away) and with a one-line reply: the
#: screen gives that exactly once the wrapped echo is cut, at every size.
PLAIN_PROMPT = ("Plain test: \"double\" and 'single' quotes, $dollar and \\backslash; Ελληνικά "
                "κείμενο, русский текст, 日本語のテキスト, العربية, עברית; emoji 🎉🚀✨ — a prompt "
                "long enough to wrap over several rows of the composer at 80 columns, twice over.")
PARAS_PROMPT = "answer in two short paragraphs"
PARAS_REPLY = "The first paragraph.\n\nThe second paragraph."
RECORD_PROMPTS = [SHORT_PROMPT, LONG_PROMPT, MULTI_PROMPT, MD_PROMPT, PARAS_PROMPT, ECHO_PROMPT,
                  PLAIN_PROMPT,
                  *[f"{SHORT_PROMPT} ({i})" for i in range(4)]]
#: codex's status and footer rows, its composer: never part of a reply.
CHROME_ROWS = re.compile(r"\? for shortcuts|f2 to view|← for agents|^› |GPT-5\.5 default · ")


def record_reply(prompt: str) -> str:
    return {LONG_PROMPT: "You said: " + LONG_PROMPT,
            MULTI_PROMPT: "Four lines came in:\n" + MULTI_PROMPT,
            MD_PROMPT: MD_REPLY, PARAS_PROMPT: PARAS_REPLY,
            ECHO_PROMPT: "Understood.", PLAIN_PROMPT: "Noted, all of it.",
            }.get(prompt) or default_reply(prompt)


RECORDED = pytest.mark.aimterm_fake_model(think_s=0.2, prompts=RECORD_PROMPTS, reply=record_reply)


def hide_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the codex recorders made from now on at a record that does not exist: no file
    the tool holds open, a CODEX_HOME that is not there. (Deleting the rollout under a running
    codex is no way to hide it: codex then takes ~3 s more per turn.)"""
    monkeypatch.setattr(codex_records, "held_rollouts", lambda pid: [])
    monkeypatch.setattr(codex_records, "codex_home", lambda env: Path("/nonexistent/.codex"))


def codex_session(env: dict[str, str], work: Path, rows: int = 40, cols: int = 120,
                  iid: str = "codex-rec") -> Session:
    return Session(load_adapter("codex"), instance_id=iid, cwd=str(work), env=env,
                   rows=rows, cols=cols)


def assert_recorded(turn: Turn, prompt: str) -> None:
    assert turn.status is TurnStatus.DONE, turn.to_dict()
    assert turn.reply_source == "record", turn.to_dict()
    assert turn.reply == record_reply(prompt), turn.to_dict()
    # codex records tokens per turn, never a cost
    assert turn.tokens.get("input", 0) > 0 and turn.tokens.get("output", 0) > 0, turn.tokens
    assert turn.tokens["total"] == turn.tokens["input"] + turn.tokens["output"]
    assert turn.cost_usd is None


@RECORDED
@pytest.mark.parametrize("rows,cols", [(24, 80), (40, 120), (50, 200)],
                         ids=["24x80", "40x120", "50x200"])
def test_codex_replies_come_from_its_record_at_each_size(
        aimterm_fake_model: FakeModel, aimterm_offline_env: OfflineEnv, root: Path,
        monkeypatch: pytest.MonkeyPatch, rows: int, cols: int) -> None:
    base = root / f"size-{rows}x{cols}"
    env = aimterm_offline_env("codex", base / "home", model=MODEL)
    work = git_workdir(base / "work")
    t0 = time.monotonic()
    session = codex_session(env, work, rows, cols)
    try:
        session.start(timeout=60)
        # four turns of one session, each its own reply exactly: markdown, backticks and long
        # lines as the model wrote them, a wrapped 300-character prompt, a multi-line one
        for prompt in [SHORT_PROMPT, LONG_PROMPT, MULTI_PROMPT, MD_PROMPT]:
            assert_recorded(session.send(prompt, timeout=60), prompt)
    finally:
        session.stop(timeout=10)
    # the record hidden: the screen gives the replies, without codex's chrome rows
    hide_records(monkeypatch)
    session = codex_session(env, work, rows, cols)
    try:
        session.start(timeout=60)
        short = session.send(f"{SHORT_PROMPT} (0)", timeout=60)
        plain = session.send(PLAIN_PROMPT, timeout=60)
        long = session.send(LONG_PROMPT, timeout=60)
    finally:
        session.stop(timeout=10)
    assert [t.reply_source for t in (short, plain, long)] == ["screen"] * 3
    assert short.reply == record_reply(f"{SHORT_PROMPT} (0)")
    assert (short.tokens, short.cost_usd) == ({}, None)
    assert plain.reply == "Noted, all of it."  # the wrapped echo, the status, footer: all gone
    # The model's long line comes back wrapped at the width (only the record has it whole);
    # none of codex's own rows is in it.
    assert not [line for line in long.reply.splitlines() if CHROME_ROWS.search(line)], long.reply
    assert "You said: Quote test:" in long.reply
    assert long.reply.endswith("and to come back exactly as typed."), long.reply
    print(f"\n{rows}x{cols}: 7 turns in two sessions, {time.monotonic() - t0:.1f} s")


@RECORDED
def test_codex_screen_reply_at_24x80_is_exact_for_short_lines(
        aimterm_fake_model: FakeModel, aimterm_offline_env: OfflineEnv, root: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    base = root / "screen-24x80"
    env = aimterm_offline_env("codex", base / "home", model=MODEL)
    hide_records(monkeypatch)
    session = codex_session(env, git_workdir(base / "work"), 24, 80)
    try:
        session.start(timeout=60)
        assert session.send(SHORT_PROMPT, timeout=60).reply == record_reply(SHORT_PROMPT)
        paras = session.send(PARAS_PROMPT, timeout=60)
        echo = session.send(ECHO_PROMPT, timeout=60)
    finally:
        session.stop(timeout=10)
    assert (paras.reply_source, echo.reply_source) == ("screen", "screen")
    assert paras.reply == PARAS_REPLY
    assert echo.reply == "Understood."


@RECORDED
def test_codex_instances_sharing_home_and_folder_read_their_own_records(
        aimterm_fake_model: FakeModel, aimterm_offline_env: OfflineEnv, root: Path) -> None:
    # Two instances, ONE HOME and ONE folder: their rollouts land side by side in the same day
    # folder with the same cwd inside. Each reads the file its own codex process holds open.
    base = root / "shared"
    env = aimterm_offline_env("codex", base / "home", model=MODEL)
    work = git_workdir(base / "work")
    logs = base / "logs"
    logs.mkdir()

    def session(iid: str, **kw: object) -> Session:
        # with a transcript, the instance's private folder (its session id) outlives a stop
        return Session(load_adapter("codex"), instance_id=iid, cwd=str(work), env=env,
                       transcript=logs / f"{iid}.cast", **kw)  # type: ignore[arg-type]

    a, b = session("codex-a"), session("codex-b")
    sessions = [a, b]
    try:
        a.start(timeout=60)
        b.start(timeout=60)
        for prompt in [SHORT_PROMPT, MD_PROMPT]:
            ta, tb = a.submit(prompt), b.submit(prompt)  # the same prompt, at the same time
            assert_recorded(ta.result(60), prompt)
            assert_recorded(tb.result(60), prompt)
        assert_recorded(a.send(LONG_PROMPT, timeout=60), LONG_PROMPT)
        assert_recorded(b.send(MULTI_PROMPT, timeout=60), MULTI_PROMPT)
        files = sorted((base / "home" / ".codex" / "sessions").rglob("rollout-*.jsonl"))
        assert len(files) == 2
        # a's file has a's prompts only, b's b's: nothing was mixed up
        (a_file,) = [f for f in files if "a prompt long enough to wrap" in f.read_text()]
        (b_file,) = [f for f in files if "line four after a blank" in f.read_text()]
        assert a_file != b_file

        # A resumed start of a: the adapter's `resume --last` would take the folder's latest
        # session (b's, which b holds: codex would stop at "This conversation is open in
        # another app"); the recorder puts `resume <a's own id>` in its place.
        a.stop(timeout=10)
        sid = (logs / "codex-a.record" / SESSION_FILE).read_text().strip()
        assert sid in a_file.name
        a.resume = True
        a.start(timeout=60)
        assert "open in another app" not in a.screen_text()
        prompt = f"{SHORT_PROMPT} (2)"
        assert_recorded(a.send(prompt, timeout=60), prompt)
        assert prompt in a_file.read_text() and prompt not in b_file.read_text()
    finally:
        for s in sessions:
            s.stop(timeout=10)
