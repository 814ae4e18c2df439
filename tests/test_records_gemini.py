"""The Gemini CLI's session record (aimterm.records.gemini), on files the real CLI wrote.

The fixtures in tests/fixtures/records/gemini/ are session files of Gemini CLI 0.61.0 (and
0.51.0, and a whole-file one of 0.30.0) driven by aimterm against the fake model (see the
README there); screen-deltas.json holds the lines real turns left on the screen, at three
sizes, with and without a true-colour terminal, for the screen fallback of the adapter.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimterm.adapter.detector import Detector
from aimterm.adapter.recipes import clean_reply
from aimterm.adapter.registry import load_adapter
from aimterm.records import gemini
from aimterm.records.base import RecordContext, TurnQuery
from aimterm.records.gemini import (
    ID_FILE,
    Conversation,
    GeminiRecorder,
    find_session_file,
    turn_reply,
)

FIXTURES = Path(__file__).parent / "fixtures" / "records" / "gemini"
# Two instances, one folder, one HOME (0.61.0): A ran five turns (a tool call with text before
# it, then a refused one, after which Gemini rewrote its history), B two, with B's own replies.
A_FILE = "session-2026-12-06T22-14-d6d0bf38.jsonl"
A_ID = "d6d0bf38-b163-4821-b713-40f3baff6eb7"
B_FILE = "session-2026-12-06T22-14-e2740c7e.jsonl"
B_ID = "e2740c7e-31c7-44dd-aa47-5b1a014e304e"
# One instance (0.61.0, 24x80): a long prompt in several scripts, a multi-line one.
C_FILE = "session-2026-12-06T22-11-ee4963ba.jsonl"
C_ID = "ee4963ba-6d2d-4a58-8c2d-9eb156febb7c"
V051_FILE = "v0.51.0/session-2026-12-06T22-07-12365312.jsonl"
V051_ID = "12365312-9ce1-4edb-a61d-6bf09d052e6e"
V030_FILE = "v0.30.0/session-2026-12-06T22-17-d158ffed.json"
V030_ID = "d158ffed-5cae-4aaf-8cc5-84dc5f0504d2"

MD = ("Here is the plan:\n\n1. Run `make test` first — it takes a while, so be patient with it "
      "and do not interrupt the run even when it seems stuck on the slowest of the integration "
      "suites.\n2. Then read **the log** and `grep -n FAIL log.txt`.\n\n```python\n"
      "print('hello')   # keep indentation\n```\n\nDone: *nothing* else to do.")
LONG = ('Please review this: "quoted words" and \'single quotes\', the `inline code` bits, '
        'Ελληνικά κείμενα εδώ, русский текст тоже, 日本語のテキストと中文字符, العربية أيضا, '
        'emoji 🚀🎉😀 and more plain words to make the prompt long enough that it wraps over '
        'several lines at every terminal width we try, ending here.')
MULTI = "first line of a multi-line prompt\nsecond line with `code`\nthird line, the end"


def at(clock: str) -> float:
    """A wall-clock time of the capture day (UTC), e.g. at("22:14:16.0")."""
    return datetime.fromisoformat(f"2026-12-06T{clock}+00:00").timestamp()


def q(prompt: str, clock: str, number: int = 1) -> TurnQuery:
    return TurnQuery(prompt=prompt, number=number, submitted_at=at(clock))


def chats(home: Path) -> Path:
    folder = home / ".gemini" / "tmp" / "work" / "chats"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def install(home: Path, *names: str) -> list[Path]:
    """Copy fixture session files into ``home``'s Gemini chat folder."""
    return [Path(shutil.copy(FIXTURES / name, chats(home) / Path(name).name)) for name in names]


def recorder(tmp_path: Path, session_id: str | None, *, resume: bool = True,
             env: dict[str, str] | None = None) -> GeminiRecorder:
    private = tmp_path / "private"
    private.mkdir(parents=True, exist_ok=True)
    if session_id is not None:
        (private / ID_FILE).write_text(session_id + "\n")
    ctx = RecordContext(instance="gemini-1", cwd=str(tmp_path / "work"),
                        env=env or {"HOME": str(tmp_path / "home"), "PATH": ""},
                        private_dir=private, resume=resume)
    return GeminiRecorder(ctx)


# -- replies ------------------------------------------------------------------------------------


def test_short_reply_with_tokens_and_no_cost(tmp_path: Path) -> None:
    (path,) = install(tmp_path / "home", A_FILE)
    got = recorder(tmp_path, A_ID).reply(q("say hi briefly", "22:14:16.0"))
    assert got is not None
    assert got.text == "A: say hi briefly"
    assert got.tokens == {"input": 12186, "output": 4, "cache_read": 0, "reasoning": 0,
                          "tool_input": 0, "total": 12190}
    assert got.cost_usd is None  # Gemini records no cost
    assert got.source == str(path)


def test_markdown_reply_comes_back_exactly(tmp_path: Path) -> None:
    """Backticks, bold, a fenced block with its indentation, a line far longer than any
    terminal: as the model wrote it, not as the TUI rendered it."""
    install(tmp_path / "home", A_FILE)
    got = recorder(tmp_path, A_ID).reply(q("give me the markdown plan", "22:14:17.0"))
    assert got is not None and got.text == MD


def test_tool_call_turn_has_the_text_around_it(tmp_path: Path) -> None:
    """A text before the tool call and the answer after the tool ran, one paragraph each;
    the turn's tokens are those of both model calls."""
    install(tmp_path / "home", A_FILE)
    got = recorder(tmp_path, A_ID).reply(q("please create notes.txt with a greeting",
                                            "22:14:18.0"))
    assert got is not None
    assert got.text == "I will write the file now.\n\nA: please create notes.txt with a greeting"
    assert got.tokens["input"] == 100 + 12457 and got.tokens["output"] == 9 + 7
    assert got.tokens["total"] == 109 + 12464


def test_refused_tool_call_and_the_history_rewrite(tmp_path: Path) -> None:
    """After a refused tool call Gemini writes its kept history again under new ids and fresh
    timestamps: the refused turn is over with the text it had, and no later turn is given a
    rewritten copy of an earlier one."""
    install(tmp_path / "home", A_FILE)
    rec = recorder(tmp_path, A_ID)
    got = rec.reply(q("please create other.txt too", "22:14:19.5"))
    assert got is not None and got.text == "I will write the file now."
    # A prompt typed again after the rewrite: only the copies (22:14:20.145) say it.
    assert rec.reply(q("give me the markdown plan", "22:14:20.5")) is None
    got = rec.reply(q("third turn question", "22:14:20.5"))
    assert got is not None and got.text == "A: third turn question"


def test_a_history_rewrite_in_the_middle_of_a_turn_does_not_cut_it(tmp_path: Path) -> None:
    """Gemini may set its history between a tool's result and the model's answer (it
    compresses a long chat there): the messages it writes again, prompts among them, are not
    the end of the turn, and the model messages among them are not its text."""
    lines = (FIXTURES / A_FILE).read_text().splitlines(keepends=True)
    start = next(i for i, ln in enumerate(lines) if '"id":"61fef80d' in ln)
    end = next(i for i, ln in enumerate(lines) if '{"$set":{"messages":[{"id":"61fef80d' in ln)
    result = next(i for i, ln in enumerate(lines) if '"id":"2cd31441' in ln)  # tool result
    path = chats(tmp_path / "home") / A_FILE
    path.write_text("".join(lines[:result + 2] + lines[start:end + 1]))
    rec = recorder(tmp_path, A_ID)
    turn = q("please create notes.txt with a greeting", "22:14:18.0")
    assert rec.reply(turn) is None  # the model has not answered the tool's result yet
    with open(path, "a") as f:
        f.write(lines[result + 2])  # its answer
    got = rec.reply(turn)
    assert got is not None
    assert got.text == "I will write the file now.\n\nA: please create notes.txt with a greeting"


def test_each_of_several_turns_gets_its_own_reply(tmp_path: Path) -> None:
    install(tmp_path / "home", C_FILE)
    rec = recorder(tmp_path, C_ID)
    turns = [("say hi briefly", "22:11:18.5", "FAKE-REPLY: say hi briefly"),
             (LONG, "22:11:19.5", "Echo: " + LONG),
             (MULTI, "22:11:20.5", "FAKE-REPLY: " + MULTI),
             ("give me the markdown plan", "22:11:21.4", MD.replace(
                 "```python\nprint('hello')   # keep indentation\n```\n\n", "")),
             ("please create notes.txt with a greeting", "22:11:22.3",
              "FAKE-REPLY: please create notes.txt with a greeting")]
    for number, (prompt, clock, want) in enumerate(turns, 1):
        got = rec.reply(q(prompt, clock, number))
        assert got is not None and got.text == want, prompt
    # Asked again, a turn already given is not given twice.
    assert rec.reply(q("say hi briefly", "22:11:18.5", 6)) is None


def test_same_prompt_twice_is_two_turns(tmp_path: Path) -> None:
    home = tmp_path / "home"
    lines = (FIXTURES / A_FILE).read_text().splitlines(keepends=True)
    first = [ln for ln in lines if '"say hi briefly"' in ln or '"A: say hi briefly"' in ln][:2]
    again = [ln.replace("22:14:16", "22:14:30").replace('"id":"', '"id":"x') for ln in first]
    path = chats(home) / A_FILE
    path.write_text("".join(lines[:2] + first + again))
    rec = recorder(tmp_path, A_ID)
    one = rec.reply(q("say hi briefly", "22:14:15.9"))
    two = rec.reply(q("say hi briefly", "22:14:29.9", 2))
    assert one is not None and two is not None and one.text == two.text == "A: say hi briefly"
    assert rec.reply(q("say hi briefly", "22:14:29.9", 3)) is None


# -- one instance's own record ----------------------------------------------------------------


def test_another_instances_session_in_the_same_folder_is_never_read(tmp_path: Path) -> None:
    install(tmp_path / "home", A_FILE, B_FILE)
    a = recorder(tmp_path / "a", A_ID, env={"HOME": str(tmp_path / "home")})
    b = recorder(tmp_path / "b", B_ID, env={"HOME": str(tmp_path / "home")})
    assert (got := a.reply(q("say hi briefly", "22:14:16.0"))) and got.text == "A: say hi briefly"
    # B typed the same prompt later: A's record has no such turn, and B's is not A's to read.
    assert a.reply(q("say hi briefly", "22:14:22.0")) is None
    assert (got := b.reply(q("say hi briefly", "22:14:22.0"))) and got.text == "B: say hi briefly"
    assert b.reply(q("give me the markdown plan", "22:14:17.0")) is None
    assert recorder(tmp_path / "c", "0badc0de-0000-4000-8000-000000000000",
                    env={"HOME": str(tmp_path / "home")}).reply(
                        q("say hi briefly", "22:14:16.0")) is None


def test_a_file_named_like_the_session_but_of_another_is_not_read(tmp_path: Path) -> None:
    """The short id in the name is only a hint: the first line must name the session."""
    home = tmp_path / "home"
    (path,) = install(home, B_FILE)
    path.rename(path.with_name(A_FILE))
    assert find_session_file([home / ".gemini"], A_ID) is None
    assert recorder(tmp_path, A_ID).reply(q("say hi briefly", "22:14:22.0")) is None


def test_the_newest_file_of_the_session_is_read(tmp_path: Path) -> None:
    """A chat reset starts a new file under the same id (in a later minute)."""
    home = tmp_path / "home"
    (old,) = install(home, A_FILE)
    new = old.with_name("session-2026-12-06T22-20-d6d0bf38.jsonl")
    head = old.read_text().splitlines(keepends=True)[0]
    new.write_text(head + '{"id":"u9","timestamp":"2026-12-06T22:20:01.000Z","type":"user",'
                   '"content":[{"text":"after the reset"}]}\n{"id":"g9","timestamp":'
                   '"2026-12-06T22:20:02.000Z","type":"gemini","content":"fresh start","model":"m"}\n')
    os.utime(old, (1, 1))
    assert find_session_file([home / ".gemini"], A_ID) == new
    got = recorder(tmp_path, A_ID).reply(q("after the reset", "22:20:00.5"))
    assert got is not None and got.text == "fresh start" and got.tokens == {}


def test_gemini_cli_home_moves_the_record(tmp_path: Path) -> None:
    install(tmp_path / "elsewhere", A_FILE)
    env = {"HOME": str(tmp_path / "home"), "GEMINI_CLI_HOME": str(tmp_path / "elsewhere")}
    got = recorder(tmp_path, A_ID, env=env).reply(q("say hi briefly", "22:14:16.0"))
    assert got is not None and got.text == "A: say hi briefly"


# -- reading a file being written --------------------------------------------------------------


def test_partial_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    path = chats(tmp_path / "home") / A_FILE
    lines = (FIXTURES / A_FILE).read_bytes().splitlines(keepends=True)
    reply_at = next(i for i, ln in enumerate(lines) if b'"A: say hi briefly"' in ln)
    path.write_bytes(b"".join(lines[:reply_at]) + lines[reply_at][:40])
    rec = recorder(tmp_path, A_ID)
    turn = q("say hi briefly", "22:14:16.0")
    assert rec.reply(turn) is None
    with open(path, "ab") as f:
        f.write(lines[reply_at][40:-1])  # all but the newline
    assert rec.reply(turn) is None
    with open(path, "ab") as f:
        f.write(b"\n")
    got = rec.reply(turn)
    assert got is not None and got.text == "A: say hi briefly"


def test_polling_reads_only_what_was_appended(tmp_path: Path) -> None:
    (path,) = install(tmp_path / "home", A_FILE)
    rec = recorder(tmp_path, A_ID)
    assert rec.reply(q("not asked yet", "22:14:16.0")) is None
    assert rec._held is not None and rec._held.tail.offset == path.stat().st_size
    with open(path, "a") as f:
        f.write('{"id":"u1","timestamp":"2026-12-06T22:15:00.000Z","type":"user",'
                '"content":[{"text":"one more"}]}\n')
    before = rec._held.tail.offset
    assert rec.reply(q("one more", "22:14:59.0")) is None  # asked, not answered yet
    assert rec._held.tail.offset == path.stat().st_size > before
    with open(path, "a") as f:
        f.write('{"id":"g1","timestamp":"2026-12-06T22:15:01.000Z","type":"gemini",'
                '"content":"the answer","tokens":{"input":3,"output":2,"total":5}}\n')
    got = rec.reply(q("one more", "22:14:59.0"))
    assert got is not None and got.text == "the answer"
    assert got.tokens == {"input": 3, "output": 2, "total": 5}


def test_a_turn_waiting_on_its_tools_is_not_over(tmp_path: Path) -> None:
    path = chats(tmp_path / "home") / A_FILE
    lines = (FIXTURES / A_FILE).read_bytes().splitlines(keepends=True)
    # Up to the text before the tool call, with its toolCalls (success) recorded.
    cut = next(i for i, ln in enumerate(lines) if b'"status":"success"' in ln)
    path.write_bytes(b"".join(lines[:cut + 1]))
    rec = recorder(tmp_path, A_ID)
    turn = q("please create notes.txt with a greeting", "22:14:18.0")
    assert rec.reply(turn) is None
    with open(path, "ab") as f:
        f.write(b"".join(lines[cut + 1:]))
    got = rec.reply(turn)
    assert got is not None and got.text.endswith("A: please create notes.txt with a greeting")


def test_garbage_and_unknown_entries_are_skipped(tmp_path: Path) -> None:
    path = chats(tmp_path / "home") / A_FILE
    lines = (FIXTURES / A_FILE).read_bytes().splitlines(keepends=True)
    junk = [b"not json at all\n", b"[1, 2, 3]\n", b'"a string"\n', b"\xff\xfe\x00garbage\n",
            b'{"id": 5, "type": "user"}\n', b'{"id": "z1", "type": "novel-kind", "content": {}}\n',
            b'{"$set": {"messages": "not a list"}}\n', b'{"$future": {"x": 1}}\n',
            b'{"id": "z2", "type": "gemini", "content": 42, "tokens": {"input": "many"}}\n',
            b'{"$rewindTo": "nowhere"}\n', b"\n", b"{\n"]
    mixed = [lines[0]]
    for i, line in enumerate(lines[1:]):
        mixed += [junk[i % len(junk)], line]
    path.write_bytes(b"".join(mixed))
    rec = recorder(tmp_path, A_ID)
    got = rec.reply(q("give me the markdown plan", "22:14:17.0"))
    assert got is not None and got.text == MD


def test_a_huge_line_is_skipped_and_reads_stay_bounded(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gemini, "READ_CHUNK", 1024)
    monkeypatch.setattr(gemini, "MAX_LINE", 4096)
    path = chats(tmp_path / "home") / A_FILE
    lines = (FIXTURES / A_FILE).read_bytes().splitlines(keepends=True)
    huge = b'{"$set": {"summary": "' + b"x" * 20000 + b'"}}\n'
    path.write_bytes(lines[0] + huge + b"".join(lines[1:]))
    rec = recorder(tmp_path, A_ID)
    turn = q("say hi briefly", "22:14:16.0")
    calls = 0
    while (got := rec.reply(turn)) is None and calls < 50:  # a few reads per call
        calls += 1
    assert got is not None and got.text == "A: say hi briefly"
    assert calls >= 3  # 1 KiB reads, 4 a call: the 20 KiB line alone took more than one call


def test_a_file_replaced_is_read_again_from_the_start(tmp_path: Path) -> None:
    (path,) = install(tmp_path / "home", A_FILE)
    rec = recorder(tmp_path, A_ID)
    assert rec.reply(q("say hi briefly", "22:14:16.0")) is not None
    head = path.read_text().splitlines(keepends=True)[0]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(head + '{"id":"u2","timestamp":"2026-12-06T22:16:00.000Z","type":"user",'
                   '"content":[{"text":"rewritten"}]}\n{"id":"g2","timestamp":'
                   '"2026-12-06T22:16:01.000Z","type":"gemini","content":"from the new file",'
                   '"model":"m"}\n')
    tmp.replace(path)  # what Gemini's rewriteConversationFile does (temp file + rename)
    got = rec.reply(q("rewritten", "22:15:59.0"))
    assert got is not None and got.text == "from the new file"


USER_LINE = ('{"id":"u5","timestamp":"2026-12-06T22:30:00.000Z","type":"user",'
             '"content":[{"text":"while another starts"}]}\n')
REPLY_LINE = ('{"id":"g5","timestamp":"2026-12-06T22:30:01.000Z","type":"gemini",'
              '"content":"still mine","tokens":{"input":7,"output":2,"total":9}}\n')


def test_a_file_gemini_recreated_without_its_first_line_is_read(tmp_path: Path) -> None:
    """Another instance's start-up deleted the file; Gemini went on appending to its name."""
    path = chats(tmp_path / "home") / A_FILE
    path.write_text('{"$set":{"lastUpdated":"2026-12-06T22:30:00.000Z"}}\n' + USER_LINE
                    + REPLY_LINE)
    assert find_session_file([tmp_path / "home" / ".gemini"], A_ID) == path
    got = recorder(tmp_path, A_ID).reply(q("while another starts", "22:29:59.5"))
    assert got is not None and got.text == "still mine"


@pytest.mark.parametrize("reply_in", ["old", "new"])
def test_a_file_deleted_during_a_turn_loses_nothing(tmp_path: Path, reply_in: str) -> None:
    """The prompt went to the file before another start-up deleted it; the reply went to it
    just before, or to the file Gemini re-created: the file held open still has the prompt."""
    (path,) = install(tmp_path / "home", A_FILE)
    rec = recorder(tmp_path, A_ID)
    turn = q("while another starts", "22:29:59.5")
    with open(path, "a") as f:
        f.write(USER_LINE)
    assert rec.reply(turn) is None  # read up to the prompt: the turn is still running
    if reply_in == "old":
        with open(path, "a") as f:
            f.write(REPLY_LINE)
    path.unlink()
    if reply_in == "new":
        assert rec.reply(turn) is None  # gone, not re-created yet
        path.write_text(REPLY_LINE)
    got = rec.reply(turn)
    assert got is not None and got.text == "still mine" and got.tokens["total"] == 9


def test_missing_or_unreadable_record_is_none(tmp_path: Path) -> None:
    rec = recorder(tmp_path, A_ID)
    assert rec.reply(q("say hi briefly", "22:14:16.0")) is None  # no file at all
    (chats(tmp_path / "home") / A_FILE).mkdir()  # there, but no file to read
    rec = recorder(tmp_path, A_ID)
    assert rec.reply(q("say hi briefly", "22:14:16.0")) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "type", "content", "tokens", "toolCalls", "timestamp", "$set",
                         "messages", "displayContent", "text", "status", "sessionId",
                         "$rewindTo", "functionResponse", "thought"]), inner, max_size=5),
    max_leaves=12), max_size=12))
def test_no_record_makes_the_reader_raise(records: list[Any]) -> None:
    conv = Conversation()
    for record in records:
        conv.apply(record)
        conv.apply({"$set": {"messages": [record]}})
        conv.apply_legacy(record)
    turn_reply(conv.messages, TurnQuery(prompt="x", number=1, submitted_at=0.0))


# -- versions, launch, resume ----------------------------------------------------------------


def test_the_record_of_0_51_reads_the_same(tmp_path: Path) -> None:
    install(tmp_path / "home", V051_FILE)
    rec = recorder(tmp_path, V051_ID)
    got = rec.reply(q("give me the markdown plan", "22:07:48.5"))
    assert got is not None and got.text == MD
    got = rec.reply(q("third turn question", "22:07:52.0", 2))
    assert got is not None and got.text == "FAKE-REPLY: third turn question"
    assert got.tokens["total"] == 12206


def test_the_whole_file_record_of_0_30(tmp_path: Path) -> None:
    install(tmp_path / "home", V030_FILE)
    got = recorder(tmp_path, V030_ID).reply(q("say hi briefly", "22:17:50.0"))
    assert got is not None and got.text == "FAKE-REPLY: say hi briefly"
    assert got.tokens["input"] == 6306


def fake_install(root: Path, version: str) -> str:
    """A PATH whose ``gemini`` belongs to a package.json of ``version``."""
    pkg = root / "node_modules" / "@google" / "gemini-cli"
    (pkg / "bundle").mkdir(parents=True)
    (pkg / "package.json").write_text(json.dumps({"name": "@google/gemini-cli",
                                                  "version": version}))
    script = pkg / "bundle" / "gemini.js"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    (root / "bin").mkdir()
    (root / "bin" / "gemini").symlink_to(script)
    return str(root / "bin")


def test_a_fresh_start_pins_a_session_id_of_its_own(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path / "home"), "PATH": fake_install(tmp_path / "cli", "0.61.0")}
    one = recorder(tmp_path / "one", None, resume=False, env=env)
    two = recorder(tmp_path / "two", None, resume=False, env=env)
    flag, sid = one.launch_args()
    assert flag == "--session-id" and sid != two.launch_args()[1]
    assert (tmp_path / "one" / "private" / ID_FILE).read_text().strip() == sid
    assert one.launch_env() == {}


def test_a_version_without_the_flag_gets_none_and_no_record(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path / "home"), "PATH": fake_install(tmp_path / "cli", "0.40.1")}
    rec = recorder(tmp_path, None, resume=False, env=env)
    assert rec.launch_args() == []
    assert rec.reply(q("say hi briefly", "22:14:16.0")) is None
    assert gemini.gemini_version(env) == (0, 40, 1)
    assert gemini.gemini_version({"PATH": str(tmp_path / "nothing")}) is None


def test_resume_adds_nothing_and_follows_the_stored_session(tmp_path: Path) -> None:
    """--resume and --session-id exclude each other: the adapter's resume arguments run, and
    the session this instance had is read (Gemini keeps its id and file on resume)."""
    install(tmp_path / "home", A_FILE)
    rec = recorder(tmp_path, A_ID, resume=True)
    assert rec.launch_args() == [] and rec.session_id == A_ID
    got = rec.reply(q("third turn question", "22:14:20.5"))
    assert got is not None and got.text == "A: third turn question"
    lost = recorder(tmp_path / "lost", None, resume=True)  # no id kept: the screen it is
    assert lost.launch_args() == [] and lost.reply(q("third turn question", "22:14:20.5")) is None


# -- the screen fallback (adapters/gemini.yaml) ------------------------------------------------


def deltas() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((FIXTURES / "screen-deltas.json").read_text())
    return cases


def case_id(case: dict[str, Any]) -> str:
    return f"{case['rows']}x{case['cols']}-{case['colorterm'] or 'plain'}-{case['prompt'][:12]}"


@pytest.mark.parametrize("case", deltas(), ids=case_id)
def test_screen_reply_has_no_borders_echo_or_chrome(case: dict[str, Any]) -> None:
    """Every size from 24x80 to 50x200, with and without a true-colour terminal (whose ▄/▀
    bands around the user's message used to open every reply)."""
    spec = load_adapter("gemini")
    reply = clean_reply(spec, case["lines"], case["prompt"], Detector(spec).idle_patterns)
    assert not any(set(line) <= set("▄▀─") for line in reply.splitlines() if line)
    assert "Type your message" not in reply and "WriteFile" not in reply
    assert reply.splitlines()[0].startswith(case["expected"].split("\n")[0][:20])
    assert "Please review this" not in reply.replace("Echo: Please review this", "")
    if case["prompt"] in ("say hi briefly", "please create notes.txt with a greeting"):
        assert reply == case["expected"]
