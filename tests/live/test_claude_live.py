"""The built-in ``claude`` adapter against the real Claude Code, pointed at the fake model server.

Everything that makes Claude Code work offline lives in each instance's environment and
throwaway HOME (``aimterm.testing.offline``, through the plugin's ``aimterm_offline_env``),
not in the adapter: ``ANTHROPIC_BASE_URL`` on the fake server with
``ANTHROPIC_AUTH_TOKEN`` (a bearer token: on a fresh HOME ``ANTHROPIC_API_KEY`` would bring up
a "use this API key?" dialog instead), telemetry, error reporting, the auto-updater and other
non-essential traffic off. 2.1.330 starts in "auto" permission mode, where edits and simple
commands run without asking; ``~/.claude/settings.json`` selects "manual" mode so that both
kinds of confirmation show up.

Run with ``-s`` to see the timings.
"""

from __future__ import annotations

import collections
import re
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from aimterm.events import Event, ProcessExited, QuestionAnswered, QuestionPending, StateChanged
from aimterm.pool import GroupSpec, InstanceSetup, Pool
from aimterm.session import Session, TurnStatus
from aimterm.states import State
from aimterm.testing.clis import find_cli
from aimterm.testing.fakemodel import FakeModel, ToolCall, default_reply
from aimterm.testing.offline import git_workdir
from aimterm.testing.plugin import OfflineEnv
from tests.helpers import extended_adapter
from tests.helpers import fleet_result as result
from tests.helpers import fleet_screens as screens

CLAUDE = find_cli("claude")
pytestmark = pytest.mark.skipif(
    CLAUDE is None, reason="Claude Code is not installed (scripts/install-agent-clis installs it)")

THINK_S = 0.3
PROMPTS = [f"claude pool prompt {i}: say something short about the number {i}" for i in range(10)]
EDIT_PROMPT = "please create the notes file for the project"
EDIT_FILE = "notes.txt"
EDIT_CONTENT = "hello from the fake model"
SHELL_PROMPT = "please run the greeting command"
#: A command that writes: manual mode lets read-only commands such as a bare ``echo`` run
#: without asking, a redirection into a file asks ("Bash command … Do you want to proceed?").
SHELL_FILE = "greeting.txt"
SHELL_OUTPUT = "aimterm-shell-ok"
SHELL_COMMAND = f"echo {SHELL_OUTPUT} > {SHELL_FILE}"

#: ~/.claude/settings.json: "manual" permission mode, so both kinds of confirmation show up.
SETTINGS = {"permissions": {"defaultMode": "manual"}}
pytestmark = [pytestmark, pytest.mark.aimterm_fake_model(
    think_s=THINK_S, prompts=[*PROMPTS, EDIT_PROMPT, SHELL_PROMPT],
    tool_calls={EDIT_PROMPT: ToolCall(kind="edit", path=EDIT_FILE, content=EDIT_CONTENT),
                SHELL_PROMPT: ToolCall(kind="shell", command=SHELL_COMMAND)})]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("claude")


#: The Create/Edit/Overwrite dialog, its path and its "1. Yes" option.
MATCH = (r"^ (?:Create|Edit|Overwrite) file\n (?P<file>\S+)\n(?:.*\n)*?"
         r" Do you want to (?:create|make this edit to|overwrite) (?P<target>\S+)\?\n ❯ 1\. Yes")
#: "1" (Yes) when the path (shown relative to the working directory, "../x" outside it)
#: stays inside the tree.
ANSWER_RULE = r"""
answers:
  - name: edit-in-tree
    match: '{MATCH}'
    when: {file: '^(?![/~])(?!\.\.?/)(?!.*/\.\./)(?!\.\.$)', target: '^(?![/~])(?!\.\./)'}
    send: "1"
""".replace("{MATCH}", MATCH)


def approving_adapter(root: Path):  # type: ignore[no-untyped-def]
    """The built-in adapter plus ONE answer rule: approve file edits inside the working tree."""
    text = "name: claude-approve-edits\nextends: claude\n" + textwrap.dedent(ANSWER_RULE)
    return extended_adapter(text, root / "claude-approve-edits.yaml")


def test_pool_of_three_claude_instances(aimterm_fake_model: FakeModel,
                                        aimterm_offline_env: OfflineEnv, root: Path) -> None:
    fake = aimterm_fake_model
    spec = approving_adapter(root)
    assert [a.name for a in spec.answers] == ["edit-in-tree"]

    def setup(iid: str, index: int) -> InstanceSetup:
        base = root / f"inst-{index}"
        env = aimterm_offline_env("claude", base / "home", settings=SETTINGS)
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
        # Each fresh HOME showed the first-run dialogs, and the trust dialog was confirmed on
        # "Yes, I trust this folder" (its default is "No, exit").
        for rule in ("theme", "security-notes", "trust-yes"):
            answered = {e.instance for e in events
                        if isinstance(e, QuestionAnswered) and e.rule == rule}
            assert answered == {inst.id for inst in instances}, (rule, answered)
        version = subprocess.run([CLAUDE, "--version"], capture_output=True, text=True,
                                 env=aimterm_offline_env("claude", root / "inst-0" / "home",
                                                     settings=SETTINGS)).stdout
        print(f"\nclaude {version.strip()}")
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
            assert turn.reply == fake.expected_reply(prompt), turn.to_dict()
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

        # (b) an edit: the permission dialog is answered by the rule, the file is written.
        pending_before = sum(isinstance(e, QuestionPending) for e in events)
        edit = result(pool, pool.submit(EDIT_PROMPT), 60)
        assert edit.status is TurnStatus.DONE, edit.to_dict()
        assert [a.rule for a in edit.answered] == ["edit-in-tree"], edit.to_dict()
        assert edit.answered[0].question.startswith(f"Create file\n {EDIT_FILE}\n")
        assert f"Do you want to create {EDIT_FILE}?" in edit.answered[0].question
        assert sum(isinstance(e, QuestionPending) for e in events) == pending_before
        written = root / f"inst-{pool.instance(edit.instance).index}" / "work" / EDIT_FILE
        assert written.read_text().strip() == EDIT_CONTENT
        assert edit.reply == fake.expected_reply(EDIT_PROMPT), edit.to_dict()
        print(f"edit turn {edit.total_ms:.0f} ms, approved by rule edit-in-tree")

        # (c) a shell command: nobody approves it automatically; the session waits.
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
        assert question is not None, screens(pool)
        assert question.rule == "permission"
        assert question.question.startswith("Bash command\n")
        assert SHELL_COMMAND in question.question
        assert "Do you want to proceed?" in question.question
        waiting = pool.instance(question.instance)
        assert waiting.state is State.WAITING
        time.sleep(0.3)
        assert not future.done()
        ran = root / f"inst-{waiting.index}" / "work" / SHELL_FILE
        assert not ran.exists()
        pool.answer(question.instance, "1")
        shell = result(pool, future, 60)
        assert shell.status is TurnStatus.DONE, shell.to_dict()
        assert shell.instance == question.instance
        assert [a.rule for a in shell.answered] == ["caller"]
        assert ran.read_text().strip() == SHELL_OUTPUT
        assert shell.reply == fake.expected_reply(SHELL_PROMPT), shell.to_dict()
        print(f"shell turn waited for approval, then done ({shell.total_ms:.0f} ms in all)")
    finally:
        t2 = time.monotonic()
        pool.shutdown(timeout=20)
        shutdown_s = time.monotonic() - t2

    # (d) every instance quit by its exit keys (/exit: exit code 0, no signal), none left.
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
    # Only the model endpoints were asked for: nothing else went to the server.
    assert {r.endpoint for r in fake.requests} <= {"chat", "count_tokens"}, \
        collections.Counter(r.endpoint for r in fake.requests)
    assert not fake.errors
    assert re.fullmatch(r"\d+\.\d+\.\d+ \(Claude Code\)", version.strip()), version


# -- replies from Claude Code's own record (reply.record: claude) -----------------------------
#
# The session file this instance's Claude Code writes (pinned with --session-id) gives the
# model's text as it wrote it; the screen gives it wrapped, with its markdown rendered. Each
# size runs one session on the record, and one whose record is hidden (the reader looks in a
# config folder that does not exist) to check the screen fallback.

SHORT = "say something short about the number 7"
LONG = ('Please read this carefully: "double quotes", \'single quotes\', `inline code`, '
        'Ελληνικά γράμματα, русский текст, 日本語のテキスト, العربية, हिन्दी, 한국어 and emoji '
        '🎉🚀👍🏽 — then answer with one short sentence that mentions "quotes" and `backticks` '
        'again, please, without any further commentary at all, thanks a lot!')
MULTI = "first line of a multi-line prompt\nsecond line with `code` in it\nthird and last line"
MD = "give me the markdown answer"
MDTEXT = ("Here is a **summary** with `inline_code()` and a [link](http://example.invalid).\n\n"
          "This second paragraph is deliberately long so that any terminal narrower than two "
          "hundred columns has to wrap it: it keeps going with words, `more_code`, and then some "
          "more words until it finally ends here.\n\n"
          "- first item with `x = 1`\n- second item\n\n"
          "```python\ndef f():\n    return 42\n```\n\n"
          "Last line.")
#: What the screen can give back word for word: inline markdown, and paragraphs long enough
#: to wrap at every size (Claude Code renders the markdown and wraps the lines).
PLAIN = "give me two plain paragraphs"
PLAINTEXT = ("Here is `inline_code()` and a **bold** word.\n\n"
             "This second paragraph is deliberately long so that a terminal of eighty or of a "
             "hundred and twenty columns has to wrap it, and it keeps going with `more_code` and "
             "then some more words until it finally ends here, well past two hundred characters "
             "in all, which is what it takes.")
TOOL = "please write the record notes"
TOOL_AFTER = "Done: `record-notes.txt` holds the greeting."
SIZES = [(24, 80), (40, 120), (50, 200)]


def record_reply(prompt: str) -> str:
    return {MD: MDTEXT, PLAIN: PLAINTEXT, TOOL: TOOL_AFTER}.get(prompt) or default_reply(prompt)


def sized_adapter(root: Path, rows: int, cols: int, extra: str = ""):  # type: ignore[no-untyped-def]
    text = (f"name: claude-{rows}x{cols}\nextends: claude\n"
            f"terminal: {{rows: {rows}, cols: {cols}}}\n{extra}")
    return extended_adapter(text, root / f"claude-{rows}x{cols}.yaml")


def words(text: str) -> list[str]:
    """The words of a reply with the inline markdown that Claude Code renders away."""
    return text.replace("`", "").replace("**", "").split()


RECORD_MARK = pytest.mark.aimterm_fake_model(
    think_s=0.2, prompts=[SHORT, LONG, MULTI, MD, PLAIN, TOOL], reply=record_reply,
    tool_calls={TOOL: ToolCall(kind="edit", path="record-notes.txt", content="hello")})


@RECORD_MARK
@pytest.mark.parametrize(("rows", "cols"), SIZES, ids=[f"{r}x{c}" for r, c in SIZES])
def test_claude_replies_come_from_its_record(aimterm_fake_model: FakeModel,
                                             aimterm_offline_env: OfflineEnv, tmp_path: Path,
                                             rows: int, cols: int) -> None:
    fake = aimterm_fake_model
    spec = sized_adapter(tmp_path, rows, cols)
    assert spec.reply.record == "claude" and (spec.terminal.rows, spec.terminal.cols) == (rows, cols)
    env = aimterm_offline_env("claude", tmp_path / "home")
    prompts = [SHORT, LONG, MULTI, MD] + ([TOOL] if cols == 120 else [])
    t0 = time.monotonic()
    with Session(spec, cwd=str(git_workdir(tmp_path / "work")), env=env) as session:
        for prompt in prompts:
            turn = session.send(prompt, timeout=60)
            assert turn.status is TurnStatus.DONE, turn.to_dict()
            assert turn.reply_source == "record", turn.to_dict()
            assert turn.reply == fake.expected_reply(prompt), turn.to_dict()
            assert turn.tokens["input"] > 0 and turn.tokens["output"] > 0, turn.tokens
            assert set(turn.tokens) >= {"input", "output", "cache_read", "cache_write"}
            assert turn.cost_usd is None  # Claude Code records no cost per turn
        if TOOL in prompts:
            # Two API calls (the tool call, then the text after the tool result): both counted.
            asked = [r for r in fake.model_requests() if r.prompt == TOOL]
            assert len(asked) == 2 and turn.tokens["output"] > 6
            assert (tmp_path / "work" / "record-notes.txt").read_text().strip() == "hello"
    # One session file, named by the id the reader gave Claude Code.
    assert len(list((tmp_path / "home" / ".claude" / "projects").glob("*/*.jsonl"))) == 1
    print(f"\n{rows}x{cols}: {len(prompts)} turns from the record in "
          f"{time.monotonic() - t0:.1f} s")


def hidden_record(monkeypatch: pytest.MonkeyPatch, where: Path) -> None:
    """Make the reader look for the session in a config folder that does not exist."""
    import aimterm.records.claude as claude_record

    monkeypatch.setattr(claude_record, "config_dir", lambda env: where)


@RECORD_MARK
@pytest.mark.parametrize(("rows", "cols"), SIZES, ids=[f"{r}x{c}" for r, c in SIZES])
def test_claude_screen_fallback_without_its_record(aimterm_fake_model: FakeModel,
                                                   aimterm_offline_env: OfflineEnv,
                                                   tmp_path: Path, rows: int, cols: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fake = aimterm_fake_model
    hidden_record(monkeypatch, tmp_path / "no-such-config")
    spec = sized_adapter(tmp_path, rows, cols, "reply: {record_wait_ms: 500}\n")
    env = aimterm_offline_env("claude", tmp_path / "home")
    with Session(spec, cwd=str(git_workdir(tmp_path / "work")), env=env) as session:
        short = session.send(SHORT, timeout=60)
        assert short.reply_source == "screen", short.to_dict()
        assert short.reply == fake.expected_reply(SHORT)
        assert short.tokens == {} and short.cost_usd is None
        plain = session.send(PLAIN, timeout=60)
        assert plain.reply_source == "screen", plain.to_dict()
        # No border, input box, footer, spinner or status line: the words of the text, its
        # inline markdown rendered, its paragraphs wrapped.
        assert words(plain.reply) == words(PLAINTEXT), plain.reply


@RECORD_MARK
@pytest.mark.parametrize(("rows", "cols"), [(24, 80)], ids=["24x80"])
def test_claude_screen_fallback_drops_a_wrapped_echo(aimterm_fake_model: FakeModel,
                                                     aimterm_offline_env: OfflineEnv,
                                                     tmp_path: Path, rows: int, cols: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fake = aimterm_fake_model
    hidden_record(monkeypatch, tmp_path / "no-such-config")
    spec = sized_adapter(tmp_path, rows, cols, "reply: {record_wait_ms: 500}\n")
    env = aimterm_offline_env("claude", tmp_path / "home")
    with Session(spec, cwd=str(git_workdir(tmp_path / "work")), env=env) as session:
        for prompt in (LONG, MULTI):
            turn = session.send(prompt, timeout=60)
            assert turn.reply_source == "screen", turn.to_dict()
            assert words(turn.reply) == words(fake.expected_reply(prompt)), turn.reply
