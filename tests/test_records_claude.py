"""The Claude Code session-file reader, on session files the real Claude Code wrote.

The fixtures (tests/fixtures/records/claude/) were captured from Claude Code driven by a
Session against the fake model, trimmed of the bulky lines that say nothing about turns
(request shapes, attachments): ``2.1.330-a`` is instance A's session (a short reply, a
markdown reply, an edit with text before and after the tool call, a ~300-character prompt
with quotes, backticks, non-Latin scripts and emoji, a three-line prompt; then, resumed with
``--resume``, the short prompt again); ``2.1.330-b`` is instance B's, in the same folder and
HOME, typed the same short prompt a moment after A; ``2.1.197-a`` and ``2.1.332-a`` are the
first three turns and the resumed one with the older and the newest version.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from aimterm.records import claude as rc
from aimterm.records import recorder_class, tail
from aimterm.records.base import RecordContext, TurnQuery
from aimterm.records.claude import (
    ClaudeRecorder,
    config_dir,
    parse_line,
    project_dir_name,
    turn_reply,
)
from aimterm.records.follow import RecordFollower

FIXTURES = Path(__file__).parent / "fixtures" / "records" / "claude"

SHORT = "say something short about the number 7"
MD = "give me the markdown answer"
TOOL = "please create the notes file"
LONG = ('Please read this carefully: "double quotes", \'single quotes\', `inline code`, '
        'Ελληνικά γράμματα, русский текст, 日本語のテキスト, العربية, हिन्दी, 한국어 and emoji 🎉🚀👍🏽 '
        '— then answer with one short sentence that mentions "quotes" and `backticks` again, please, '
        'without any further commentary at all, thanks a lot!')
MULTI = "first line of a multi-line prompt\nsecond line with `code` in it\nthird and last line"
MDTEXT = ("Here is a **summary** with `inline_code()` and a [link](http://example.invalid).\n\n"
          "This second paragraph is deliberately long so that any terminal narrower than two "
          "hundred columns has to wrap it: it keeps going with words, `more_code`, and then some "
          "more words until it finally ends here.\n\n"
          "- first item with `x = 1`\n- second item\n\n"
          "```python\ndef f():\n    return 42\n```\n\n"
          "Last line.")
TOOLTEXT = "I will create `notes.txt` now.\n\nDone: `notes.txt` holds the greeting."
CWD = "/work/project"


def lines_of(name: str) -> list[bytes]:
    return (FIXTURES / name).read_bytes().splitlines(keepends=True)


def prompt_lines(lines: list[bytes]) -> list[tuple[int, str, float]]:
    """(line index, prompt, time) of each typed prompt, read independently of the reader."""
    from datetime import datetime

    out = []
    for i, raw in enumerate(lines):
        obj = json.loads(raw)
        if obj.get("type") == "user" and obj.get("promptSource") == "typed":
            at = datetime.fromisoformat(obj["timestamp"].replace("Z", "+00:00")).timestamp()
            out.append((i, obj["message"]["content"], at))
    return out


def turn_ends(lines: list[bytes]) -> list[int]:
    """Index of each turn's closing line (``system``/``turn_duration``)."""
    return [i for i, raw in enumerate(lines) if b'"subtype":"turn_duration"' in raw]


def query(prompt: str, at: float) -> TurnQuery:
    return TurnQuery(prompt=prompt, number=1, submitted_at=at - 0.05)


class Home:
    """A throwaway HOME with Claude Code's project folder for CWD."""

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.env = {"HOME": str(self.home)}
        self.project = self.home / ".claude" / "projects" / project_dir_name(CWD)
        self.project.mkdir(parents=True)
        self.private = tmp_path / "private"
        self.private.mkdir(exist_ok=True)

    def recorder(self, resume: bool = False, instance: str = "a") -> ClaudeRecorder:
        ctx = RecordContext(instance=instance, cwd=CWD, env=self.env,
                            private_dir=self.private, resume=resume)
        return ClaudeRecorder(ctx)

    def write(self, rec: ClaudeRecorder, lines: list[bytes], mode: str = "wb") -> Path:
        path = self.project / f"{rec.session_id}.jsonl"
        with open(path, mode) as f:
            f.writelines(lines)
        return path


def test_registered_and_pins_a_fresh_session_each_start(tmp_path: Path) -> None:
    assert recorder_class("claude") is ClaudeRecorder
    home = Home(tmp_path)
    one, two = home.recorder(), home.recorder()
    assert one.launch_args() == ["--session-id", one.session_id]
    assert two.session_id != one.session_id
    assert one.resume_args() is None
    assert one.launch_env() == {}
    # Nothing written yet (Claude Code makes the file with the first prompt): no reply.
    assert one.reply(query(SHORT, 0.0)) is None


def test_each_turn_gets_its_own_exact_reply_as_the_file_grows(tmp_path: Path) -> None:
    """Five turns and a resumed sixth, written turn by turn as the tool would; each asked for
    when its turn is in: short, markdown, tool call (text around it), long and multi-line
    prompts, and the short prompt again (its own, later answer)."""
    home = Home(tmp_path)
    rec = home.recorder()
    lines = lines_of("2.1.330-a.jsonl")
    prompts = prompt_lines(lines)
    assert [p for _, p, _ in prompts] == [SHORT, MD, TOOL, LONG, MULTI, SHORT]
    expected = ["Seven is a prime number (answer 1).", MDTEXT, TOOLTEXT,
                "FAKE-REPLY fc6c6241: Please read this carefully: \"double quotes\", 'single quotes'",
                "FAKE-REPLY 36d025c4: first line of a multi-line prompt\nsecond line with `code` in",
                "Seven is a prime number (answer 3)."]
    ends = turn_ends(lines)
    written = 0
    for (_, prompt, at), end, want in zip(prompts, ends, expected, strict=True):
        path = home.write(rec, lines[written:end + 1], "ab")
        written = end + 1
        got = rec.reply(query(prompt, at))
        assert got is not None, prompt
        assert got.text == want
        assert got.source == str(path)
        assert got.cost_usd is None  # Claude Code records no cost per turn


def test_tokens_of_a_turn_sum_its_api_calls_once_each(tmp_path: Path) -> None:
    home = Home(tmp_path)
    rec = home.recorder()
    lines = lines_of("2.1.330-a.jsonl")
    home.write(rec, lines)
    prompts = {p: at for _, p, at in prompt_lines(lines)[:5]}
    short = rec.reply(query(SHORT, prompts[SHORT]))
    assert short is not None
    assert short.tokens == {"input": 14174, "output": 7, "cache_read": 0, "cache_write": 0,
                            "reasoning": 0}
    # The edit: one API message of three blocks (thinking, text, tool_use: its usage repeated
    # on each), then the answer after the tool result.
    tool = rec.reply(query(TOOL, prompts[TOOL]))
    assert tool is not None and tool.text == TOOLTEXT
    assert tool.tokens == {"input": 14344 + 14478, "output": 17 + 5, "cache_read": 0,
                           "cache_write": 0, "reasoning": 0}


def test_an_unfinished_turn_is_not_a_reply(tmp_path: Path) -> None:
    """Up to the tool call, up to its result: the turn goes on, so no reply yet."""
    home = Home(tmp_path)
    rec = home.recorder()
    lines = lines_of("2.1.330-a.jsonl")
    index, prompt, at = prompt_lines(lines)[2]
    assert prompt == TOOL
    tool_use = next(i for i in range(index, len(lines)) if b'"type":"tool_use"' in lines[i])
    result = next(i for i in range(tool_use, len(lines)) if b'"tool_result"' in lines[i])
    home.write(rec, lines[:tool_use + 1])
    assert rec.reply(query(TOOL, at)) is None
    home.write(rec, lines[tool_use + 1:result + 1], "ab")
    assert rec.reply(query(TOOL, at)) is None
    home.write(rec, lines[result + 1:], "ab")
    got = rec.reply(query(TOOL, at))
    assert got is not None and got.text == TOOLTEXT


def test_a_partial_last_line_waits_for_its_end(tmp_path: Path) -> None:
    home = Home(tmp_path)
    rec = home.recorder()
    lines = lines_of("2.1.330-a.jsonl")
    _, prompt, at = prompt_lines(lines)[1]
    answer = next(i for i, raw in enumerate(lines) if b"deliberately long" in raw
                  and b'"type":"assistant"' in raw)
    data = b"".join(lines[:answer + 1])
    home.write(rec, [data[:-40]])  # the reply's line, being written
    assert rec.reply(query(prompt, at)) is None
    home.write(rec, [data[-40:]], "ab")
    got = rec.reply(query(prompt, at))
    assert got is not None and got.text == MDTEXT


def test_garbage_and_unknown_entries_are_skipped(tmp_path: Path) -> None:
    home = Home(tmp_path)
    rec = home.recorder()
    lines = lines_of("2.1.330-a.jsonl")
    junk = [b"not json at all\n", b"[1, 2, 3]\n", b"\xff\xfe\x00garbage\n", b"\n",
            b'{"type": "assistant", "message": "a string"}\n',
            b'{"type": "assistant", "message": {"content": [{"type": "hologram"}, 7]}}\n',
            b'{"type": "user", "message": {"content": 42}}\n',
            b'{"type": "a-kind-of-a-later-version", "message": {"role": "user", '
            b'"content": "say something short about the number 7"}}\n',
            b'{"type": "system", "subtype": "turn_duration", "timestamp": 12}\n',
            b'{"deeply": ' + b"[" * 100_000 + b"\n"]
    mixed = [line for raw in lines for line in (raw, *junk)]
    home.write(rec, mixed)
    for _, prompt, at in prompt_lines(lines)[:5]:
        got = rec.reply(query(prompt, at))
        assert got is not None and got.text, prompt
    assert parse_line(b"\x00") == [] and parse_line("{}") == []


def test_missing_or_unreadable_record_is_none(tmp_path: Path) -> None:
    home = Home(tmp_path)
    rec = home.recorder()
    assert rec.reply(query(SHORT, 0.0)) is None  # no file
    (home.project / f"{rec.session_id}.jsonl").mkdir()  # not a file
    assert rec.reply(query(SHORT, 0.0)) is None
    shutil.rmtree(home.home / ".claude")  # no config folder at all
    assert rec.reply(query(SHORT, 0.0)) is None
    # A file that is there and then unreadable (replaced by a folder) stays "no reply".
    home.project.mkdir(parents=True)
    path = home.write(rec, lines_of("2.1.330-a.jsonl")[:3])
    assert rec.reply(query(SHORT, 0.0)) is None
    path.unlink()
    path.mkdir()
    assert rec.reply(query(SHORT, 0.0)) is None


def test_another_instances_session_in_the_same_folder_is_never_read(tmp_path: Path) -> None:
    """B typed the same prompt a second after A, in the same folder and HOME: A's reader reads
    only the file of A's own session id, and has nothing while A's file is not there."""
    home = Home(tmp_path)
    a, b = home.recorder(instance="a"), home.recorder(instance="b")
    a_lines, b_lines = lines_of("2.1.330-a.jsonl"), lines_of("2.1.330-b.jsonl")
    home.write(b, b_lines)
    _, prompt, b_at = prompt_lines(b_lines)[0]
    _, _, a_at = prompt_lines(a_lines)[0]
    assert prompt == SHORT and b_at > a_at
    assert a.reply(query(SHORT, a_at)) is None
    home.write(a, a_lines[:turn_ends(a_lines)[0] + 1])
    got_a, got_b = a.reply(query(SHORT, a_at)), b.reply(query(SHORT, b_at))
    assert got_a is not None and got_a.text == "Seven is a prime number (answer 1)."
    assert got_b is not None and got_b.text == "Seven is a prime number (answer 2)."
    assert got_a.source != got_b.source


@pytest.mark.parametrize("version", ["2.1.197", "2.1.332"])
def test_older_and_newer_versions_read_the_same(tmp_path: Path, version: str) -> None:
    home = Home(tmp_path)
    rec = home.recorder()
    lines = lines_of(f"{version}-a.jsonl")
    home.write(rec, lines)
    prompts = prompt_lines(lines)
    assert [p for _, p, _ in prompts] == [SHORT, MD, TOOL, SHORT]
    got = [rec.reply(query(p, at)) for _, p, at in prompts]
    assert [g.text if g else None for g in got][1:3] == [MDTEXT, TOOLTEXT]
    assert got[0] and got[3] and got[0].text != got[3].text  # each SHORT turn its own answer
    assert got[0].text.startswith("Seven is a prime number (answer ")
    # 2.1.197 gives no thinking-token count; the rest is the same.
    keys = {"input", "output", "cache_read", "cache_write"}
    assert set(got[0].tokens) == (keys if version == "2.1.197" else keys | {"reasoning"})
    assert got[0].tokens["output"] == 7


def test_resume_continues_this_instances_own_session(tmp_path: Path) -> None:
    home = Home(tmp_path)
    first = home.recorder()
    lines = lines_of("2.1.330-a.jsonl")
    resumed_at = prompt_lines(lines)[5][0]
    first_run = next(i for i in range(resumed_at, -1, -1) if b'"type":"cost-state"' in lines[i])
    home.write(first, lines[:first_run + 1])
    assert first.reply(query(SHORT, prompt_lines(lines)[0][2])) is not None
    # The id is kept once the session has a file, for the next start.
    assert (home.private / rc.ID_FILE).read_text().strip() == first.session_id

    again = home.recorder(resume=True)
    assert again.session_id == first.session_id
    assert again.launch_args() == []
    assert again.resume_args() == ["--resume", first.session_id]
    home.write(again, lines[first_run + 1:], "ab")
    _, prompt, at = prompt_lines(lines)[5]
    got = again.reply(query(prompt, at))
    assert got is not None and got.text == "Seven is a prime number (answer 3)."
    # This run reads from where the file ended: the first run's SHORT is not this run's.
    assert again.reply(query(SHORT, prompt_lines(lines)[0][2])).text.endswith("(answer 3).")
    assert again.reply(query(MD, prompt_lines(lines)[1][2])) is None


def test_resume_without_a_session_of_its_own_pins_nothing(tmp_path: Path) -> None:
    home = Home(tmp_path)
    rec = home.recorder(resume=True)  # no id kept
    assert rec.launch_args() == [] and rec.session_id is None and rec.resume_args() is None
    assert rec.reply(query(SHORT, 0.0)) is None
    # An id kept whose session has no file (a run without turns): Claude Code would refuse
    # "--resume" with it ("No conversation found"), so it is not used.
    (home.private / rc.ID_FILE).write_text("0b0d2a4e-1111-4222-8333-944455556666\n")
    rec = home.recorder(resume=True)
    assert rec.launch_args() == [] and rec.resume_args() is None
    (home.private / rc.ID_FILE).write_text("../../not-a-uuid\n")
    assert home.recorder(resume=True).launch_args() == []


def test_where_the_session_files_are(tmp_path: Path) -> None:
    assert config_dir({"HOME": "/h"}) == Path("/h/.claude")
    assert config_dir({"HOME": "/h", "CLAUDE_CONFIG_DIR": "/c"}) == Path("/c")
    assert project_dir_name("/tmp/cl11/cap330/work") == "-tmp-cl11-cap330-work"
    assert project_dir_name("/tmp/a b/ü🎉x") == "-tmp-a-b----x"  # an emoji is two UTF-16 units
    # Over 200 characters: cut, plus Claude Code's hash in base 36 (computed with node).
    long = "/tmp/" + "très-long-dossier-🎉/" * 12 + "work"
    assert project_dir_name(long) == (
        "-tmp" + "-tr-s-long-dossier---" * 9 + "-tr-s-l-xakvm0")
    # A working directory spelled another way (a symlink): found by its session's name.
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    env = {"CLAUDE_CONFIG_DIR": str(tmp_path / "conf")}
    ctx = RecordContext(instance="a", cwd=str(tmp_path / "link"), env=env,
                        private_dir=tmp_path)
    rec = ClaudeRecorder(ctx)
    folder = tmp_path / "conf" / "projects" / "somewhere-else"
    folder.mkdir(parents=True)
    lines = lines_of("2.1.330-a.jsonl")
    (folder / f"{rec.session_id}.jsonl").write_bytes(b"".join(lines))
    _, prompt, at = prompt_lines(lines)[0]
    got = rec.reply(query(prompt, at))
    assert got is not None and got.source == str(folder / f"{rec.session_id}.jsonl")


def test_huge_lines_and_files_are_read_in_bounded_steps(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail, "READ_CHUNK", 4096)
    monkeypatch.setattr(tail, "MAX_LINE", 8192)
    monkeypatch.setattr(rc, "READS_PER_CALL", 2)
    home = Home(tmp_path)
    rec = home.recorder()
    lines = lines_of("2.1.330-a.jsonl")
    huge = json.dumps({"type": "user", "message": {"role": "user", "content": [
        {"type": "tool_result", "content": "x" * 100_000}]}}).encode() + b"\n"
    index, prompt, at = prompt_lines(lines)[1]
    home.write(rec, [*lines[:index + 1], huge, *lines[index + 1:]])
    polls = 0
    got = None
    while got is None and polls < 200:
        got = rec.reply(query(prompt, at))
        polls += 1
    assert got is not None and got.text == MDTEXT
    assert polls > 10  # ~150 KB in two 4 KB reads a call


def test_interrupt_markers_and_meta_entries_are_not_prompts() -> None:
    def user(content: object, **extra: object) -> list[rc.Entry]:
        return parse_line(json.dumps({"type": "user", "timestamp": "2026-01-01T00:00:01.000Z",
                                      "message": {"role": "user", "content": content}, **extra}))

    assert [e.kind for e in user([{"type": "text", "text": "[Request interrupted by user]"}])] \
        == [rc.INTERRUPT]
    assert user("Caveat: the messages below were generated by the user", isMeta=True) == []
    assert user("hello", isSidechain=True) == []
    [prompt] = user([{"type": "image"}, {"type": "text", "text": "hello"}])
    assert prompt.kind == rc.PROMPT and prompt.text == "hello"
    interrupted = [prompt, *user([{"type": "text", "text": "[Request interrupted by user]"}])]
    got = turn_reply(interrupted, "hello", prompt.at or 0.0)
    assert got is not None and got.text == ""
    # A version that writes no turn_duration and no stop reason: the last text ends the turn.
    text = parse_line(json.dumps({"type": "assistant", "uuid": "u1", "message": {
        "id": "m1", "content": [{"type": "text", "text": "hi there"}],
        "usage": {"input_tokens": 3, "output_tokens": 2}}}))
    got = turn_reply([prompt, *text], "hello", prompt.at or 0.0)
    assert got is not None and got.text == "hi there"
    assert got.tokens == {"input": 3, "output": 2}
    # Typed before the prompt was recorded... but recorded long before this turn: not ours.
    assert turn_reply([prompt, *text], "hello", (prompt.at or 0.0) + 5) is None


def _attachment(uid: str, parent: str) -> bytes:
    """An attachment line as 2.1.197 writes one after a prompt (the fixtures leave them out)."""
    return json.dumps({"parentUuid": parent, "isSidechain": False, "type": "attachment",
                       "attachment": {"type": "skill_listing", "content": "- a skill"},
                       "uuid": uid, "timestamp": "2026-12-06T22:16:12.683Z"}).encode() + b"\n"


def _uid(raw: bytes, key: str = "uuid") -> str:
    return str(json.loads(raw)[key])


def test_an_answer_written_before_its_prompt_is_read_in_conversation_order(
        tmp_path: Path) -> None:
    """2.1.197 on a busy machine appended the turn's answer and turn_duration before the
    prompt and its attachments (seen: the doctor's reply then came from the screen, the
    record complete 130 ms before the screen settled). The lines' parentUuid links give the
    turn back; while the prompt's side is not in, there is no reply (and no wrong one)."""
    home = Home(tmp_path)
    rec = home.recorder()
    lines = lines_of("2.1.197-a.jsonl")
    (_, short, short_at), (md_index, md, md_at) = prompt_lines(lines)[:2]
    head, snapshot, prompt, answer, end = lines[:2], lines[2], lines[3], lines[4], lines[5]
    assert b'"turn_duration"' in end and b'"assistant"' in answer
    # The answer follows the prompt's last attachment, which the fixture dropped: put it back.
    attachment = _attachment(_uid(answer, "parentUuid"), _uid(prompt))
    home.write(rec, [*head, answer, end])
    assert rec.reply(query(short, short_at)) is None  # no prompt yet
    home.write(rec, [snapshot, prompt], "ab")
    assert rec.reply(query(short, short_at)) is None  # the answer's link is not in yet
    home.write(rec, [attachment], "ab")
    got = rec.reply(query(short, short_at))
    assert got is not None and got.text.startswith("Seven is a prime number (answer ")
    first = got.text
    # The next turn the same way, answer and prompt in one write; the first turn's reply
    # stays its own.
    md_turn = lines[md_index - 1:md_index + 3]
    assert b'"turn_duration"' in md_turn[-1]
    home.write(rec, [md_turn[2], md_turn[3], md_turn[0], md_turn[1]], "ab")
    got = rec.reply(query(md, md_at))
    assert got is not None and got.text == MDTEXT
    again = rec.reply(query(short, short_at))
    assert again is not None and again.text == first


def test_a_follower_gets_an_answer_whose_prompt_is_written_after_it(tmp_path: Path) -> None:
    """As the session polls: the answer is in the file first, the prompt a moment later."""
    home = Home(tmp_path)
    rec = home.recorder()
    lines = lines_of("2.1.197-a.jsonl")
    (md_index, md, md_at) = prompt_lines(lines)[1]
    snapshot, prompt, answer, end = lines[md_index - 1:md_index + 3]
    home.write(rec, [answer, end])
    follower = RecordFollower(rec, 3.0)
    fetched = follower.fetch(query(md, md_at))
    time.sleep(0.3)  # a few polls that see only the answer
    assert not fetched.done()
    home.write(rec, [snapshot, prompt], "ab")
    got = fetched.result(5)
    assert got is not None and got.text == MDTEXT and follower.misses == 0


def test_conversation_order_follows_parent_links() -> None:
    def line(uid: str, parent: str, text: str = "") -> rc.Line:
        return rc.Line(uid, parent, (rc.Entry(rc.TEXT, text or uid, uid=uid),))

    def order(lines: list[rc.Line]) -> list[str]:
        return [e.text for e in rc.in_order(lines)]

    # A child before its parent goes after it; lines of one parent keep their file order.
    assert order([line("b", "a"), line("a", ""), line("c", "a"), line("d", "b")]) == \
        ["a", "b", "d", "c"]
    # A parent never read (an earlier run's, a line left out) keeps the line in file order.
    assert order([line("x", "gone"), line("y", "x"), line("z", "")]) == ["x", "y", "z"]
    # Lines naming each other (a broken file) are not lost.
    assert sorted(order([line("p", "q"), line("q", "p"), line("r", "r")])) == ["p", "q", "r"]
    # Lines without entries still link.
    bare = rc.Line("m", "a")
    assert order([line("b", "m"), bare, line("a", "")]) == ["a", "b"]
    assert rc.read_line(b'{"type": "mode"}') is None and rc.read_line(b"junk") is None
    # An entry without a uuid (not seen in any version) is kept, where the file has it.
    [end] = parse_line(b'{"type": "system", "subtype": "turn_duration"}')
    assert rc.read_line(b'{"type": "system", "subtype": "turn_duration"}') == \
        rc.Line("", "", (end,))
    got = rc.read_line(b'{"type": "attachment", "uuid": "u", "parentUuid": "p"}')
    assert got == rc.Line("u", "p")
