"""aider's record reader (aimterm.records.aider) on records the real aider wrote.

``tests/fixtures/records/aider/<version>/`` holds what aider 0.86.2 and 0.80.4 wrote in one
session each against the fake model server (the offline setup of tests/live/test_aider_live.py,
the reader's ``--chat-history-file`` and ``--llm-history-file``), seven turns: a short reply, a
markdown reply (inline code, a line far wider than the screen, a "> " quote and a "####"
heading), a reply with a "whole" edit block between two paragraphs (aider asked "Create new
file?", answered yes), a reply naming a file aider offered to add (yes: aider sent the model
a second request in the same turn), a reply opening with a quote with a hard line break, one
opening with an indented line, and a last short one. The LLM logs are trimmed to the last
message of each request; ``expected.json`` lists each turn's prompt and the fake model's
answers. ``screens.json`` holds the screen cut of real 0.86.2 turns at 24×80, 40×120 and
50×200 (the lines the session's screen fallback cleans).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aimterm.records.aider as aider_mod
import aimterm.records.tail as tail_mod
from aimterm.adapter.detector import Detector
from aimterm.adapter.recipes import clean_reply
from aimterm.adapter.registry import load_adapter
from aimterm.records import recorder_class
from aimterm.records.aider import (
    CHAT_FILE,
    LLM_FILE,
    AiderRecorder,
    parse_count,
    parse_usage,
    split_turns,
)
from aimterm.records.base import RecordContext, TurnQuery

FIXTURES = Path(__file__).parent / "fixtures" / "records" / "aider"
VERSIONS = ("0.86.2", "0.80.4")
ADAPTER = Path(__file__).resolve().parent.parent / "adapters" / "aider.yaml"


def expected(version: str) -> list[tuple[str, str]]:
    turns = json.loads((FIXTURES / version / "expected.json").read_text())
    return [(t["prompt"], "\n\n".join(t["answers"])) for t in turns]


def recorder(private: Path, cwd: Path | None = None, env: dict[str, str] | None = None,
             instance: str = "aider-1") -> AiderRecorder:
    private.mkdir(parents=True, exist_ok=True)
    ctx = RecordContext(instance=instance, cwd=str(cwd or private), env=env or {},
                        private_dir=private)
    return AiderRecorder(ctx)


def write(rec: AiderRecorder, version: str, *, chat: bool = True, llm: bool = True) -> None:
    """What aider writes during the session, after the reader was made (it reads this run's)."""
    if llm:
        with open(rec.llm_path, "ab") as f:
            f.write((FIXTURES / version / "aider.llm.history").read_bytes())
    if chat:
        with open(rec.chat_path, "ab") as f:
            f.write((FIXTURES / version / "aider.chat.history.md").read_bytes())


def ask(rec: AiderRecorder, prompt: str, number: int):
    return rec.reply(TurnQuery(prompt=prompt, number=number, submitted_at=0.0))


# -- the fixtures, turn by turn ---------------------------------------------------------------


def test_registered_and_launched_with_its_own_files(tmp_path: Path) -> None:
    assert recorder_class("aider") is AiderRecorder
    rec = recorder(tmp_path / "priv")
    assert rec.launch_args() == ["--chat-history-file", str(tmp_path / "priv" / CHAT_FILE),
                                 "--llm-history-file", str(tmp_path / "priv" / LLM_FILE)]
    assert rec.launch_env() == {}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_turn_gets_the_model_text_exactly(version: str, tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    write(rec, version)
    for number, (prompt, text) in enumerate(expected(version), 1):
        got = ask(rec, prompt, number)
        assert got is not None, prompt
        assert got.text == text, prompt
        assert got.source == str(rec.llm_path)
        assert got.tokens["input"] > 0 and got.tokens["output"] > 0
        assert got.cost_usd is not None and got.cost_usd > 0


def test_short_markdown_edit_and_two_request_turns(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    write(rec, "0.86.2")
    short = ask(rec, "hello one", 1)
    assert short is not None
    assert short.text == "FAKE-REPLY eef17eec: hello one"
    # "> Tokens: 775 sent, 12 received. Cost: $0.00080 message, $0.00080 session."
    assert short.tokens == {"input": 775, "output": 12}
    assert short.cost_usd == pytest.approx(0.0008)
    md = ask(rec, "markdown please", 2)
    assert md is not None
    assert "`inline code`" in md.text and "**bold**" in md.text
    assert "\n\n> a quoted line from the model\n\n#### A heading four\n\n" in md.text
    assert max(len(line) for line in md.text.splitlines()) > 160  # not wrapped
    edit = ask(rec, "Please create the greeting file now", 3)
    assert edit is not None
    assert edit.text == ("I will create the greeting file for you.\n\ngreeting.txt\n```\n"
                         "Hello from the fake model\n```\n\nThe file now holds the greeting.")
    # Two requests: the answer, and the one aider sent after adding the file it named.
    both = ask(rec, "Where does the hello helper live", 4)
    assert both is not None
    first, second = both.text.split("\n\n", 1)
    assert first == "The helper lives in hello_util.py at the top of the repository."
    assert second.startswith("FAKE-REPLY 12115b65: I added these files to the chat")
    assert both.tokens == {"input": 909 + 973, "output": 14 + 27}
    assert both.cost_usd == pytest.approx(0.00094 + 0.0010)


def test_without_the_llm_log_the_chat_history_gives_the_text(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    rec.llm_path.unlink()
    write(rec, "0.86.2", llm=False)
    for number, (prompt, text) in enumerate(expected("0.86.2"), 1):
        got = ask(rec, prompt, number)
        assert got is not None and got.source == str(rec.chat_path)
        if prompt in ("open with a quote", "start indented"):
            # What the chat history cannot say: a first line that looks like aider's own
            # ("> …  ") is taken for aider's, and aider stripped the first line's indentation.
            assert got.text != text and got.text in text
        else:
            assert got.text == text, prompt


def test_three_turns_each_get_their_own_reply_in_any_order_of_asking(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    write(rec, "0.86.2")
    turns = expected("0.86.2")
    # Turn 1 never asked for (it timed out, say): its text is not given to turn 2.
    got = ask(rec, turns[1][0], 2)
    assert got is not None and got.text == turns[1][1]
    assert ask(rec, turns[0][0], 1) is None  # passed by: never read again
    got = ask(rec, turns[6][0], 7)
    assert got is not None and got.text == turns[6][1]


# -- partial, broken, missing -----------------------------------------------------------------


def test_partial_last_line_waits_for_the_rest(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    chat = (FIXTURES / "0.86.2" / "aider.chat.history.md").read_bytes()
    log = (FIXTURES / "0.86.2" / "aider.llm.history").read_bytes()
    rec.llm_path.write_bytes(log)
    cut = chat.index(b"FAKE-REPLY eef17eec") + 12
    rec.chat_path.write_bytes(chat[:cut])
    assert ask(rec, "hello one", 1) is None  # the text is being written
    with open(rec.chat_path, "ab") as f:
        f.write(chat[cut:chat.index(b"> Tokens: 775")])
    assert ask(rec, "hello one", 1) is None  # aider has not closed it yet (no Tokens line)
    with open(rec.chat_path, "ab") as f:
        f.write(chat[chat.index(b"> Tokens: 775"):])
    got = ask(rec, "hello one", 1)
    assert got is not None and got.text == "FAKE-REPLY eef17eec: hello one"


def test_partial_llm_log_falls_back_to_the_chat_history_text(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    log = (FIXTURES / "0.86.2" / "aider.llm.history").read_bytes()
    rec.llm_path.write_bytes(log[:log.index(b"ASSISTANT FAKE-REPLY eef17eec") + 15])
    write(rec, "0.86.2", llm=False)
    got = ask(rec, "hello one", 1)
    assert got is not None and got.text == "FAKE-REPLY eef17eec: hello one"
    assert got.source == str(rec.chat_path)
    with open(rec.llm_path, "ab") as f:
        f.write(log[log.index(b"ASSISTANT FAKE-REPLY eef17eec") + 15:])
    got = ask(rec, "open with a quote", 5)  # the log is whole again: exact
    assert got is not None and got.text.startswith("> A quote opens this reply,  \n")


def test_garbage_and_unknown_entries_are_skipped(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    with open(rec.llm_path, "ab") as f:
        f.write(b"\xff\xfe garbage \x00\nASSISTANT not in a response\nSOMETHING 2026-01-01T00:00:00\n")
    with open(rec.chat_path, "ab") as f:
        f.write(b"\xff\xfe\x00 not utf-8\n> an unknown note  \n")
    write(rec, "0.86.2")
    with open(rec.llm_path, "ab") as f:
        f.write(b"LLM RESPONSE 2026-13-99T99:99:99\nASSISTANT an answer no turn has\n")
    for number, (prompt, text) in enumerate(expected("0.86.2"), 1):
        got = ask(rec, prompt, number)
        assert got is not None and got.text == text


def test_missing_or_unreadable_record_is_none(tmp_path: Path) -> None:
    rec = recorder(tmp_path / "priv")
    assert ask(rec, "hello one", 1) is None  # aider never started: no chat history
    shutil.rmtree(tmp_path / "priv")
    assert ask(rec, "hello one", 1) is None
    (tmp_path / "priv" / CHAT_FILE).mkdir(parents=True)  # not a file
    assert ask(rec, "hello one", 1) is None
    # A private dir the reader cannot write in: no log, and still no exception.
    blocked = tmp_path / "file"
    blocked.write_text("")
    ctx = RecordContext(instance="x", cwd=str(tmp_path), env={}, private_dir=blocked)
    assert AiderRecorder(ctx).reply(TurnQuery("hello one", 1, 0.0)) is None


def test_another_instance_in_the_same_folder_is_never_read(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    # The repository's shared history (what aider writes without the reader's flag) holds
    # another conversation with the same prompts; so does the second instance's own.
    shutil.copy(FIXTURES / "0.80.4" / "aider.chat.history.md", repo / ".aider.chat.history.md")
    one = recorder(tmp_path / "one", cwd=repo, instance="aider-1")
    two = recorder(tmp_path / "two", cwd=repo, instance="aider-2")
    assert ask(one, "hello one", 1) is None
    write(two, "0.80.4")
    assert ask(one, "Where does the hello helper live", 4) is None
    write(one, "0.86.2")
    for number, (prompt, text) in enumerate(expected("0.86.2"), 1):
        got = ask(one, prompt, number)
        assert got is not None and got.text == text
    got = ask(two, "Where does the hello helper live", 4)
    assert got is not None and "FAKE-REPLY 8e05350e" in got.text  # 0.80.4's, not 0.86.2's


def test_an_earlier_run_is_not_this_run(tmp_path: Path) -> None:
    first = recorder(tmp_path)
    write(first, "0.86.2")
    assert ask(first, "hello one", 1) is not None
    # The next start (a restart, or resume) appends to the same chat history.
    second = recorder(tmp_path)
    assert ask(second, "hello one", 1) is None
    write(second, "0.80.4")
    got = ask(second, "Where does the hello helper live", 4)
    assert got is not None and "FAKE-REPLY 8e05350e" in got.text


# -- the LLM log's size -------------------------------------------------------------------------


def test_own_log_is_emptied_once_read_and_at_each_start(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    write(rec, "0.86.2")
    for number, (prompt, _text) in enumerate(expected("0.86.2"), 1):
        assert ask(rec, prompt, number) is not None
    assert rec.llm_path.stat().st_size == 0
    # aider appends to it again (O_APPEND): the next turn is read from the start.
    rec.llm_path.write_bytes(b"TO LLM 2026-12-06T22:13:09\n-------\nUSER again\n"
                             b"LLM RESPONSE 2026-12-06T22:13:09\nASSISTANT   exact: two spaces\n")
    with open(rec.chat_path, "a") as f:
        f.write("\n#### again  \n\nexact: two spaces\n\n> Tokens: 1.2k sent, 5 received.  \n")
    got = ask(rec, "again", 8)
    assert got is not None and got.text == "  exact: two spaces"
    assert got.tokens == {"input": 1200, "output": 5} and got.cost_usd is None
    rec.llm_path.write_bytes(b"left over")
    recorder(tmp_path)
    assert rec.llm_path.read_bytes() == b""


def test_the_users_own_llm_log_is_read_from_its_end_and_kept(tmp_path: Path) -> None:
    theirs = tmp_path / "repo" / ".aider.llm.history"
    theirs.parent.mkdir()
    theirs.write_bytes(b"LLM RESPONSE 2026-12-06T00:00:00\nASSISTANT FAKE-REPLY eef17eec: old\n")
    rec = recorder(tmp_path / "priv", cwd=tmp_path / "repo",
                   env={"AIDER_LLM_HISTORY_FILE": ".aider.llm.history"})
    assert rec.launch_args() == ["--chat-history-file", str(rec.chat_path)]
    assert rec.llm_path == theirs
    size = theirs.stat().st_size
    write(rec, "0.86.2")
    for number, (prompt, text) in enumerate(expected("0.86.2"), 1):
        got = ask(rec, prompt, number)
        assert got is not None and got.text == text
    assert theirs.stat().st_size > size  # never truncated


def test_bounded_reads_take_several_polls_and_skip_huge_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail_mod, "READ_CHUNK", 1000)
    monkeypatch.setattr(tail_mod, "MAX_LINE", 5000)
    rec = recorder(tmp_path)
    with open(rec.llm_path, "ab") as f:
        f.write(b"TO LLM 2026-12-06T22:13:00\n-------\nUSER " + b"x" * 20000 + b"\n")
    write(rec, "0.86.2")
    prompt, text = expected("0.86.2")[0]
    polls = 0
    while (got := ask(rec, prompt, 1)) is None or got.source != str(rec.llm_path):
        polls += 1
        assert polls < 100
    assert polls > 3 and got.text == text


def test_a_replaced_chat_history_is_read_from_its_start(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    rec.chat_path.write_text("x" * 5000)
    assert ask(rec, "hello one", 1) is None
    rec.chat_path.write_bytes((FIXTURES / "0.86.2" / "aider.chat.history.md").read_bytes())
    got = ask(rec, "hello one", 1)
    assert got is not None and got.text == "FAKE-REPLY eef17eec: hello one"


# -- aider's format, written the way aider writes it -------------------------------------------


class AiderWriter:
    """aider's InputOutput writes (aider/io.py, 0.86.2), for cases the fake model cannot make."""

    def __init__(self, chat: Path, llm: Path) -> None:
        self.chat, self.llm = chat, llm
        self.append("\n# aider chat started at 2026-12-06 22:13:00\n\n")

    def append(self, text: str, linebreak: bool = False, blockquote: bool = False) -> None:
        if blockquote:
            text = "> " + text.strip()
        if linebreak:
            text = text.rstrip() + "  \n"
        if not text.endswith("\n"):
            text += "\n"
        with open(self.chat, "a") as f:
            f.write(text)

    def user_input(self, inp: str) -> None:
        hist = "  \n#### ".join(inp.splitlines() or ["<blank>"])
        self.append(f"\n#### {hist}", linebreak=True)

    def tool_output(self, message: str) -> None:
        self.append(message, linebreak=True, blockquote=True)

    def request(self, content: str, usage: str = "Tokens: 10 sent, 2 received.") -> None:
        with open(self.llm, "a") as f:
            f.write("TO LLM 2026-12-06T22:13:00\n-------\nUSER x\n")
            f.write("LLM RESPONSE 2026-12-06T22:13:00\n")
            f.write("\n".join(f"ASSISTANT {line}" for line in content.splitlines()) + "\n")
        if content:
            self.append("\n" + content.strip() + "\n\n")
        self.tool_output(usage)


def test_cache_counts_costs_on_their_own_line_and_reasoning(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    io = AiderWriter(rec.chat_path, rec.llm_path)
    io.user_input("think first")
    reasoning = f"<{aider_mod._REASONING_TAG}>\n\nhmm, let me see\n\n</{aider_mod._REASONING_TAG}>"
    io.request(f"{reasoning}\n\nThe answer.",
               "Tokens: 12k sent, 1.5k cache write, 8.2k cache hit, 250 received.\n"
               "Cost: $0.0123 message, $0.0456 session.")
    got = ask(rec, "think first", 1)
    assert got is not None and got.text == "The answer."
    assert got.tokens == {"input": 12000, "cache_write": 1500, "cache_read": 8200,
                          "output": 250}
    assert got.cost_usd == pytest.approx(0.0123)


def test_commands_without_text_and_repeated_prompts(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    io = AiderWriter(rec.chat_path, rec.llm_path)
    io.user_input("/tokens")
    io.tool_output("Approximate context window usage for openai/fake-model, in tokens:")
    assert ask(rec, "/tokens", 1) is None  # no model text: the screen has the answer
    for answer in ("first answer", "second answer"):
        io.user_input("same again")
        io.request(answer)
    assert ask(rec, "same again", 3).text == "second answer"  # its own, by number
    io.user_input("{\nline one\nline two\n}".strip("{}\n"))
    io.request("multi answer")
    got = ask(rec, "{\nline one\nline two\n}", 4)  # typed with aider's braces
    assert got is not None and got.text == "multi answer"


def test_chat_mode_commands_write_their_message_again(tmp_path: Path) -> None:
    # What aider 0.86.2 wrote for "/ask what is up": the command, then its message.
    rec = recorder(tmp_path)
    io = AiderWriter(rec.chat_path, rec.llm_path)
    io.user_input("/ask what is up")
    io.user_input("what is up")
    io.request("FAKE-REPLY 3ea024d4: what is up")
    io.user_input("what is up")
    io.request("asked plainly")
    got = ask(rec, "/ask what is up", 1)
    assert got is not None and got.text == "FAKE-REPLY 3ea024d4: what is up"
    got = ask(rec, "what is up", 2)
    assert got is not None and got.text == "asked plainly"


def test_a_reply_that_looks_like_the_record_itself(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    io = AiderWriter(rec.chat_path, rec.llm_path)
    tricky = ("#### a heading with a hard break  \n\n> Tokens: 1 sent, 1 received.  \n\n"
              "#### not a prompt  \n\n> quote  \n\n# aider chat started at never\n\n    indented")
    io.user_input("be tricky")
    io.request(tricky)
    io.user_input("next")
    io.request("plain")
    got = ask(rec, "be tricky", 1)
    assert got is not None and got.text == tricky
    assert got.tokens == {"input": 10, "output": 2}  # aider's report, not the text's
    got = ask(rec, "next", 2)
    assert got is not None and got.text == "plain"


_LINES = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=40),
    # Lines that look like aider's own (a prompt, a usage report, a start) or like the log's.
    st.sampled_from(["", "> quote", "> hard break  ", "#### heading", "#### heading  ", "    code",
                     "```", "- item `x`", "> Tokens: 1 sent, 1 received.  ", "the prompt",
                     "#### the prompt  ", "# aider chat started at x", "ASSISTANT x", "-------",
                     "LLM RESPONSE 2026-01-01T00:00:00"]))


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.lists(_LINES, min_size=1, max_size=8).map("\n".join), min_size=1,
                      max_size=3))
def test_any_text_comes_back_exactly(tmp_path_factory: pytest.TempPathFactory,
                                     texts: list[str]) -> None:
    rec = recorder(tmp_path_factory.mktemp("prop"))
    io = AiderWriter(rec.chat_path, rec.llm_path)
    io.user_input("the prompt")
    for text in texts:
        io.request(text)
    io.user_input("the next prompt")
    want = "\n\n".join(t.strip("\n") for t in texts if t.strip())
    got = ask(rec, "the prompt", 1)
    if not want:
        assert got is None
    else:
        assert got is not None and got.text == want


# -- pure parts ---------------------------------------------------------------------------------


def test_parse_count_and_usage() -> None:
    assert [parse_count(s) for s in ("0", "766", "1.2k", "12k")] == [0, 766, 1200, 12000]
    tokens, cost = parse_usage(["> Tokens: 766 sent, 12 received.  ", "unrelated",
                                "> Tokens: 1.0k sent, 1 received. Cost: $0.01 message, "
                                "$0.02 session.  "])
    assert tokens == {"input": 1766, "output": 13} and cost == pytest.approx(0.01)
    assert parse_usage(["no report"]) == ({}, None)


def test_split_turns_by_prompt_lines() -> None:
    lines = ["", "# aider chat started at 2026-12-06 22:13:00", "", "> Aider v0.86.2  ", "",
             "#### first  ", "#### second line  ", "", "text", "#### heading of the text", "",
             "> Tokens: 1 sent, 1 received.  ", "", "#### next  ", "", "answer"]
    assert split_turns(lines) == [
        ("first\nsecond line", ["", "text", "#### heading of the text", "",
                                "> Tokens: 1 sent, 1 received.  ", ""]),
        ("next", ["", "answer"])]


# -- the adapter's screen fallback, on real screens --------------------------------------------


SCREENS = json.loads((FIXTURES / "screens.json").read_text())


@pytest.mark.parametrize("case", SCREENS, ids=lambda c: f"{c['size']}-{c['case']}")
def test_screen_fallback_drops_echo_and_chrome(case: dict) -> None:
    spec = load_adapter(ADAPTER)
    reply = clean_reply(spec, case["lines"], case["prompt"], Detector(spec).idle_patterns)
    lines = reply.splitlines()
    # The reply starts with the model's text (rendered: no backticks, no emphasis marks).
    rendered = case["model"].replace("`", "").replace("**", "")
    assert reply.split()[:4] == rendered.split()[:4], reply
    assert not any(line.startswith(("> ", "Tokens:", "─")) or "(Y)es/(N)o" in line
                   for line in lines), reply
    if case["case"] in ("long", "multi"):
        # Plain text: what rich shows is the model's text without its backticks.
        assert reply.split() == case["model"].replace("`", "").split()


@pytest.mark.parametrize("case", [c for c in SCREENS if c["case"] == "after-edit"],
                         ids=lambda c: c["size"])
def test_screen_fallback_after_an_edit(case: dict) -> None:
    spec = load_adapter(ADAPTER)
    reply = clean_reply(spec, case["lines"], case["prompt"], Detector(spec).idle_patterns)
    assert reply == case["model"]


def test_fixture_versions_wrote_the_same_format() -> None:
    def shape(version: str) -> list[str]:
        text = (FIXTURES / version / "aider.chat.history.md").read_text()
        return [line[:4] for line in text.splitlines()
                if line.startswith(("#### ", "> Tokens", "# aider"))]
    assert shape("0.86.2") == shape("0.80.4")
    assert os.path.getsize(FIXTURES / "0.86.2" / "aider.llm.history") < 20_000
