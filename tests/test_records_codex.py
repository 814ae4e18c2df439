"""The Codex CLI recorder on real rollout files, captured from codex 0.169.0 (the pin), 0.171.0
and 0.150.0 against the fake model (trimmed: long context strings cut, settings entries
flattened). A process that holds a copy open stands in for the codex process."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aimterm.records import codex as rec
from aimterm.records import recorder_class
from aimterm.records.base import RecordContext, TurnQuery
from aimterm.records.codex import SESSION_FILE, CodexRecorder, RolloutParser, turn_tokens

FIX = Path(__file__).parent / "fixtures" / "records" / "codex"
MAIN = {
    "0.169.0": FIX / "0.169.0/rollout-2026-12-06T22-05-26-01a24d63-f494-76d2-8003-e3f2b74bc519.jsonl",
    "0.171.0": FIX / "0.171.0/rollout-2026-12-06T22-05-53-01a24d64-60d0-7983-8ed1-44d5bad361fb.jsonl",
    "0.150.0": FIX / "0.150.0/rollout-2026-12-06T22-09-19-01a24d67-83f0-77a1-ac2b-478473a718d2.jsonl",
}
#: The second instance's session (same HOME, same folder), later resumed by `resume --last`.
OTHER = FIX / "0.169.0/rollout-2026-12-06T22-05-30-01a24d64-04bb-74f1-b3e0-8c6c248a6d76.jsonl"
SESSION_ID = "01a24d63-f494-76d2-8003-e3f2b74bc519"

#: What the fake model was told to say (the capture script's replies).
SHORT = "say hi briefly"
MD = "explain the markdown layout"
TOOL = "please run the greeting command"
LONG = ("Quote test: \"double\" and 'single' quotes, `backticks` and $dollar; "
        "Ελληνικά κείμενο, русский текст, 日本語のテキスト, العربية, עברית; emoji 🎉🚀✨ — "
        "this prompt is long enough to wrap across several rows of the composer at 80 columns, "
        "and it should come back unchanged.")
MULTI = "first line of the prompt\nsecond line of the prompt\nthird line"
MD_REPLY = ("Here is a paragraph with `inline code`, **bold** text and a link-like path "
            "`src/app/main.py`; this first line is deliberately much longer than any terminal "
            "width so the TUI has to wrap it over several rows when it renders.\n\n"
            "Second paragraph:\n\n- item one with `code`\n- item two\n\n"
            "```python\ndef f(x):\n    return x * 2\n```\n\nDone.")
REPLIES = {
    SHORT: "FAKE-REPLY d85e1dbb: say hi briefly",
    MD: MD_REPLY,
    TOOL: "I'll run the greeting command first.\n\nThe command printed aimterm-shell-ok.",
    LONG: "Got it: " + LONG,
    MULTI: "FAKE-REPLY 206c98a8: first line of the prompt\nsecond line of the prompt\nthird lin",
}
CWD = {v: f"/var/tmp/codexrec/cap{v.split('.')[1]}/work" for v in MAIN}


def today_dir(home: Path) -> Path:
    now = dt.datetime.now()
    day = home / "sessions" / f"{now:%Y}" / f"{now:%m}" / f"{now:%d}"
    day.mkdir(parents=True, exist_ok=True)
    return day


def put(home: Path, *files: Path) -> list[Path]:
    """Copies of ``files`` in today's session folder of ``home`` (names kept)."""
    day = today_dir(home)
    return [Path(shutil.copy(f, day / f.name)) for f in files]


def open_files(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return found


@pytest.fixture
def holder() -> Iterator[Callable[..., int]]:
    """``holder(*paths)``: the pid of a process that keeps ``paths`` open, as codex does."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*paths: Path) -> int:
        code = "import sys, time\nfs = [open(p, 'rb') for p in sys.argv[1:]]\ntime.sleep(120)"
        proc = subprocess.Popen([sys.executable, "-c", code, *map(str, paths)])
        procs.append(proc)
        deadline = time.monotonic() + 10
        while not {str(p) for p in paths} <= open_files(proc.pid):
            assert time.monotonic() < deadline, "the holder did not open its files"
            time.sleep(0.01)
        return proc.pid

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def recorder(tmp_path: Path, home: Path, *, cwd: str = CWD["0.169.0"], pid: int | None = None,
             instance: str = "codex-1", resume: bool = False) -> CodexRecorder:
    private = tmp_path / f"private-{instance}"
    private.mkdir(exist_ok=True)
    ctx = RecordContext(instance=instance, cwd=cwd, env={"CODEX_HOME": str(home)},
                        private_dir=private, resume=resume)
    r = CodexRecorder(ctx)
    if pid is not None:
        r.started(pid)
    r.started_at = time.time() - 5  # the copies were "written" just now
    return r


def ask(r: CodexRecorder, prompt: str, at: float = 0.0, n: int = 1) -> str | None:
    got = r.reply(TurnQuery(prompt=prompt, number=n, submitted_at=at))
    return None if got is None else got.text


@pytest.fixture(autouse=True)
def no_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rec, "_CLAIMS", {})


def test_registered_under_its_name() -> None:
    assert recorder_class("codex") is CodexRecorder
    assert CodexRecorder.name == "codex"


def test_short_reply_tokens_and_source(tmp_path: Path, holder: Callable[..., int]) -> None:
    home = tmp_path / ".codex"
    (path,) = put(home, MAIN["0.169.0"])
    r = recorder(tmp_path, home, pid=holder(path))
    got = r.reply(TurnQuery(SHORT, 1, 0.0))
    assert got is not None
    assert got.text == REPLIES[SHORT]
    assert got.tokens == {"input": 10663, "output": 5, "cache_read": 0, "cache_write": 0,
                          "reasoning": 0, "total": 10668}
    assert got.cost_usd is None  # codex records no cost
    assert got.source == str(path)


def test_every_turn_of_a_session_gets_its_own_reply_exactly(
        tmp_path: Path, holder: Callable[..., int]) -> None:
    home = tmp_path / ".codex"
    (path,) = put(home, MAIN["0.169.0"])
    r = recorder(tmp_path, home, pid=holder(path))
    for n, prompt in enumerate([SHORT, MD, TOOL, LONG, MULTI], 1):
        assert ask(r, prompt, n=n) == REPLIES[prompt], prompt
    # each turn is given once: the same prompt again has no further turn
    assert ask(r, SHORT, n=6) is None


def test_markdown_and_long_lines_come_back_as_written(tmp_path: Path,
                                                      holder: Callable[..., int]) -> None:
    home = tmp_path / ".codex"
    (path,) = put(home, MAIN["0.169.0"])
    r = recorder(tmp_path, home, pid=holder(path))
    text = ask(r, MD)
    assert text == MD_REPLY
    assert "`inline code`" in text and max(len(line) for line in text.splitlines()) > 200


def test_a_tool_call_turn_joins_the_text_around_it_and_sums_its_tokens(
        tmp_path: Path, holder: Callable[..., int]) -> None:
    home = tmp_path / ".codex"
    (path,) = put(home, MAIN["0.169.0"])
    r = recorder(tmp_path, home, pid=holder(path))
    got = r.reply(TurnQuery(TOOL, 1, 0.0))
    assert got is not None and got.text == REPLIES[TOOL]
    # two model requests in the turn: the fake's 100 + 20 and then 11074 + 4
    assert got.tokens["input"] == 11174 and got.tokens["output"] == 24


def test_the_prompt_is_compared_without_whitespace(tmp_path: Path,
                                                   holder: Callable[..., int]) -> None:
    home = tmp_path / ".codex"
    (path,) = put(home, MAIN["0.169.0"])
    r = recorder(tmp_path, home, pid=holder(path))
    assert ask(r, "  first line of the prompt second line\tof the prompt\n\nthird line ") \
        == REPLIES[MULTI]


@pytest.mark.parametrize("version", ["0.171.0", "0.150.0"])
def test_other_versions_give_the_same_replies(tmp_path: Path, holder: Callable[..., int],
                                              version: str) -> None:
    home = tmp_path / ".codex"
    (path,) = put(home, MAIN[version])
    r = recorder(tmp_path, home, cwd=CWD[version], pid=holder(path))
    for n, prompt in enumerate([SHORT, MD, TOOL, LONG, MULTI], 1):
        assert ask(r, prompt, n=n) == REPLIES[prompt], (version, prompt)


def test_tokens_without_a_usage_record_are_the_growth_of_the_total() -> None:
    # 0.150.0 writes no token_usage_record: the turn's tokens come from token_count totals
    parser = RolloutParser()
    parser.feed_lines(MAIN["0.150.0"].read_text().splitlines())
    tool = next(t for t in parser.turns if TOOL in t.user)
    assert not tool.usage
    assert turn_tokens(tool) == {"input": 10947, "output": 24, "cache_read": 0,
                                 "cache_write": 0, "reasoning": 0, "total": 10971}
    first = parser.turns[0]
    assert turn_tokens(first)["total"] == 10478


def test_another_instances_session_in_the_same_folder_is_never_read(
        tmp_path: Path, holder: Callable[..., int]) -> None:
    home = tmp_path / ".codex"
    mine, other = put(home, MAIN["0.169.0"], OTHER)
    r = recorder(tmp_path, home, pid=holder(mine))
    # "second instance prompt" is only in the other instance's file (same folder, same HOME)
    assert ask(r, "second instance prompt") is None
    assert ask(r, SHORT) == REPLIES[SHORT]
    assert set(r._files) == {mine}


def test_without_open_files_a_file_is_taken_by_cwd_prompt_and_claim(
        tmp_path: Path, holder: Callable[..., int]) -> None:
    home = tmp_path / ".codex"
    main, other = put(home, MAIN["0.169.0"], OTHER)
    idle = holder()  # a live tool that holds no rollout (e.g. a version that closes it)
    a = recorder(tmp_path, home, pid=idle, instance="codex-a")
    b = recorder(tmp_path, home, pid=idle, instance="codex-b")
    assert ask(a, SHORT) == REPLIES[SHORT]
    assert ask(b, "second instance prompt") == "FAKE-REPLY b9293a56: second instance prompt"
    # a claimed the first file: b never reads a turn from it
    assert ask(b, MD) is None
    assert ask(a, MD) == MD_REPLY
    # another folder's instance takes neither
    c = recorder(tmp_path, home, cwd="/elsewhere", pid=idle, instance="codex-c")
    assert ask(c, TOOL) is None


def test_files_older_than_the_run_are_not_candidates(tmp_path: Path) -> None:
    home = tmp_path / ".codex"
    (path,) = put(home, MAIN["0.169.0"])
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert ask(recorder(tmp_path, home), SHORT) is None


def test_turns_of_an_earlier_run_are_skipped_on_resume(tmp_path: Path,
                                                       holder: Callable[..., int]) -> None:
    # The other file: "second instance prompt" in one run, "resumed prompt" appended by
    # `codex resume --last` in the next. This run's prompts were typed after its start.
    home = tmp_path / ".codex"
    (path,) = put(home, OTHER)
    parser = RolloutParser()
    parser.feed_lines(path.read_text().splitlines())
    resumed_at = parser.turns[1].started
    assert resumed_at is not None
    r = recorder(tmp_path, home, pid=holder(path), resume=True)
    assert ask(r, "second instance prompt", at=resumed_at - 0.1) is None
    assert ask(r, "resumed prompt", at=resumed_at - 0.1) == "FAKE-REPLY 477d386e: resumed prompt"


def test_a_partial_last_line_waits_for_its_end(tmp_path: Path,
                                               holder: Callable[..., int]) -> None:
    home = tmp_path / ".codex"
    data = MAIN["0.169.0"].read_bytes()
    end = data.index(b'"type":"task_complete"')
    end = data.rindex(b"\n", 0, end) + 1  # up to the line that ends the first turn
    day = today_dir(home)
    path = day / MAIN["0.169.0"].name
    cut = end + 40
    path.write_bytes(data[:cut])
    r = recorder(tmp_path, home, pid=holder(path))
    assert ask(r, SHORT) is None  # the turn is not over yet
    with open(path, "ab") as f:
        f.write(data[cut:])
    assert ask(r, SHORT) == REPLIES[SHORT]


def test_a_reply_line_cut_in_the_middle_is_not_read_as_garbage(
        tmp_path: Path, holder: Callable[..., int]) -> None:
    home = tmp_path / ".codex"
    data = MAIN["0.169.0"].read_bytes()
    at = data.index(b"Here is a paragraph with `inline code`", data.index(b'"response_item"'))
    path = today_dir(home) / MAIN["0.169.0"].name
    path.write_bytes(data[:at + 30])
    r = recorder(tmp_path, home, pid=holder(path))
    assert ask(r, SHORT) == REPLIES[SHORT]
    assert ask(r, MD) is None
    with open(path, "ab") as f:
        f.write(data[at + 30:])
    assert ask(r, MD) == MD_REPLY


def test_garbage_and_unknown_entries_are_skipped(tmp_path: Path,
                                                 holder: Callable[..., int]) -> None:
    home = tmp_path / ".codex"
    lines = MAIN["0.169.0"].read_bytes().split(b"\n")
    junk = [b"not json at all", b"[1, 2, 3]", b'"a string"', b"\xff\xfe\x00binary",
            b'{"type":"mystery","payload":{"type":"task_complete"}}',
            b'{"type":"event_msg","payload":"not an object"}',
            b'{"type":"response_item","payload":{"type":"message","role":"assistant",'
            b'"content":[{"type":"output_image","image_url":"x"}]}}',
            b'{"type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":'
            b'{"input_tokens":"many","output_tokens":true}}}}',
            b"[" * 100_000 + b"]" * 100_000]
    mixed: list[bytes] = []
    for i, line in enumerate(lines):
        mixed.append(line)
        if i % 3 == 1:
            mixed.append(junk[(i // 3) % len(junk)])
    path = today_dir(home) / MAIN["0.169.0"].name
    path.write_bytes(b"\n".join(mixed))
    r = recorder(tmp_path, home, pid=holder(path))
    for n, prompt in enumerate([SHORT, MD, TOOL, LONG, MULTI], 1):
        assert ask(r, prompt, n=n) == REPLIES[prompt], prompt


def test_no_file_gives_none(tmp_path: Path, holder: Callable[..., int]) -> None:
    home = tmp_path / ".codex"
    assert ask(recorder(tmp_path, home), SHORT) is None  # no sessions folder at all
    assert ask(recorder(tmp_path, home, pid=holder()), SHORT) is None  # a tool with none open
    assert ask(recorder(tmp_path, home, pid=2 ** 22 + 7), SHORT) is None  # no such process


def test_a_file_that_disappears_or_cannot_be_read_gives_none(
        tmp_path: Path, holder: Callable[..., int]) -> None:
    home = tmp_path / ".codex"
    path, other = put(home, MAIN["0.169.0"], OTHER)
    r = recorder(tmp_path, home, pid=holder(path))
    assert ask(r, SHORT) == REPLIES[SHORT]
    path.unlink()
    assert ask(r, MD) is None
    # a "rollout" that is a folder: unreadable
    bad = today_dir(home) / "rollout-2026-12-06T22-00-00-00000000-0000-0000-0000-000000000000.jsonl"
    bad.mkdir()
    assert ask(recorder(tmp_path, home, instance="codex-x"), SHORT) is None


def test_a_file_rewritten_from_its_start_is_read_again(tmp_path: Path,
                                                       holder: Callable[..., int]) -> None:
    home = tmp_path / ".codex"
    (path,) = put(home, MAIN["0.169.0"])
    r = recorder(tmp_path, home, pid=holder(path))
    assert ask(r, SHORT) == REPLIES[SHORT]
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b'"type":"task_started"', 2000)])  # shrank
    assert ask(r, MD) is None
    path.write_bytes(data)
    assert ask(r, MD) == MD_REPLY


def test_reads_are_bounded_and_a_huge_line_is_dropped(
        tmp_path: Path, holder: Callable[..., int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rec, "READ_CHUNK", 4096)
    monkeypatch.setattr(rec, "READ_BUDGET", 16384)
    monkeypatch.setattr(rec, "MAX_LINE", 8192)
    home = tmp_path / ".codex"
    lines = MAIN["0.169.0"].read_bytes().split(b"\n")
    filler = json.dumps({"type": "response_item", "payload": {
        "type": "function_call_output", "output": "x" * 20_000}}).encode()
    path = today_dir(home) / MAIN["0.169.0"].name
    path.write_bytes(b"\n".join(lines[:3] + [filler] * 5 + lines[3:]))
    r = recorder(tmp_path, home, pid=holder(path))
    calls = 0
    while (text := ask(r, SHORT)) is None and calls < 100:
        calls += 1
        offset = r._files[path].tail.offset  # type: ignore[union-attr]
        assert offset <= calls * 16384 + 16384
    assert text == REPLIES[SHORT]
    assert calls > 3  # it took several polls, each reading at most the budget


def test_a_huge_file_is_read_from_its_last_part(
        tmp_path: Path, holder: Callable[..., int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rec, "MAX_BACKLOG", 20_000)
    home = tmp_path / ".codex"
    (path,) = put(home, MAIN["0.169.0"])
    r = recorder(tmp_path, home, pid=holder(path))
    assert ask(r, SHORT) is None  # far before the last 20 kB: never read
    assert ask(r, MULTI) == REPLIES[MULTI]


def test_the_session_id_is_kept_for_resume(tmp_path: Path, holder: Callable[..., int]) -> None:
    home = tmp_path / ".codex"
    (path,) = put(home, MAIN["0.169.0"])
    r = recorder(tmp_path, home, pid=holder(path))
    assert r.resume_args() is None  # nothing known yet
    assert ask(r, SHORT) == REPLIES[SHORT]
    assert (r.ctx.private_dir / SESSION_FILE).read_text().strip() == SESSION_ID
    again = recorder(tmp_path, home, resume=True)
    assert again.resume_args() == ["resume", SESSION_ID]
    (r.ctx.private_dir / SESSION_FILE).write_text("--last; rm -rf /\n")
    assert again.resume_args() is None


def test_a_legacy_file_of_bare_response_items() -> None:
    lines = [
        {"id": "x", "timestamp": "2025-05-07T17:24:21.123Z", "instructions": None},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "hello"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "next"}]},
        {"type": "function_call", "name": "shell", "arguments": "{}", "call_id": "c"},
    ]
    parser = RolloutParser()
    parser.feed_lines(json.dumps(line) for line in lines)
    assert [(t.user, t.text) for t in parser.turns] == [(["hi"], "hello"), (["next"], "")]
    assert rec._finished(parser.turns[0], parser.task_events)
    assert not rec._finished(parser.turns[1], parser.task_events)


def test_events_of_older_versions_give_the_text_when_items_do_not() -> None:
    lines = [
        {"timestamp": "2025-09-01T10:00:00.000Z", "type": "event_msg",
         "payload": {"type": "task_started"}},
        {"timestamp": "2025-09-01T10:00:00.100Z", "type": "event_msg",
         "payload": {"type": "user_message", "message": "hi", "kind": "plain"}},
        {"timestamp": "2025-09-01T10:00:01.000Z", "type": "event_msg",
         "payload": {"type": "agent_message", "message": "hello **there**"}},
        {"timestamp": "2025-09-01T10:00:01.100Z", "type": "event_msg",
         "payload": {"type": "task_complete", "last_agent_message": "hello **there**"}},
    ]
    parser = RolloutParser()
    parser.feed_lines(json.dumps(line) for line in lines)
    (turn,) = parser.turns
    assert turn.done and turn.user == ["hi"] and turn.text == "hello **there**"
