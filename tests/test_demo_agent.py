"""End-to-end tests of the bundled demo agent, driven through a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.conftest import REPO

THINK = "0.2"


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["AIMTERM_DEMO_HOME"] = str(home)
    env.pop("AIMTERM_DEMO_TRACE", None)
    env.pop("AIMTERM_DEMO_THINK", None)
    env.update(extra)
    return env


def _spawn(tmp_path: Path, *args: str, answer: bool = True, **extra: str) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "aimterm.demo_agent", "--think", THINK, *args],
        dimensions=(24, 80),
        env=_env(tmp_path / "home", **extra),
        cwd=str(tmp_path),
        encoding="utf-8",
        timeout=10,
    )
    child.delaybeforesend = None
    if answer:
        # pexpect is not a terminal emulator: the test plays the terminal's part.
        child.expect_exact("\x1b[6n")
        child.send("\x1b[1;1R")
    return child


@pytest.fixture
def spawned() -> Iterator[list[pexpect.spawn]]:
    children: list[pexpect.spawn] = []
    yield children
    for child in children:
        child.close(force=True)


def _ready(spawned: list[pexpect.spawn], tmp_path: Path, *args: str) -> pexpect.spawn:
    child = _spawn(tmp_path, "--no-first-run", *args)
    spawned.append(child)
    child.expect_exact("  ? for shortcuts")
    return child


def _type(child: pexpect.spawn, text: str) -> None:
    """Type text and wait until it is on the input row, so the Enter comes in a later read."""
    child.send(text)
    child.expect_exact("❯ " + text.replace("\n", " ↵ "))


def _submit(child: pexpect.spawn, text: str) -> None:
    _type(child, text)
    child.send("\r")


def _exit_code(child: pexpect.spawn) -> int | None:
    child.expect(pexpect.EOF)
    child.close()
    status: int | None = child.exitstatus
    return status


def test_refuses_without_a_tty(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aimterm.demo_agent"],
        stdin=subprocess.PIPE,
        capture_output=True,
        text=True,
        env=_env(tmp_path / "home"),
        timeout=20,
    )
    assert proc.returncode == 2
    assert "demo-agent: stdin and stdout must be a terminal" in proc.stderr


def test_dies_when_cursor_query_is_not_answered(
    tmp_path: Path, spawned: list[pexpect.spawn]
) -> None:
    child = _spawn(tmp_path, "--no-first-run", answer=False)
    spawned.append(child)
    child.expect_exact("\x1b[6n")
    child.expect_exact("demo-agent: the terminal did not answer the cursor position query")
    assert _exit_code(child) == 3


def test_first_run_dialog_then_main_screen(tmp_path: Path, spawned: list[pexpect.spawn]) -> None:
    child = _spawn(tmp_path)
    spawned.append(child)
    child.expect_exact("\x1b]0;demo-agent setup\x07")
    for line in ("Welcome to demo-agent!", "Do you trust the files in this folder?",
                 str(tmp_path), "❯ 1. Yes, proceed", "  2. No, exit",
                 "Enter to confirm · Esc to exit"):
        child.expect_exact(line)
    child.send("\r")
    child.expect_exact("\x1b]0;✳ demo-agent\x07")
    child.expect_exact("demo-agent · " + str(tmp_path))
    child.expect_exact("  ? for shortcuts")
    state = json.loads((tmp_path / "home" / "state.json").read_text())
    assert state == {"trusted": [str(tmp_path)], "turns": 0}


def test_first_run_dialog_declined(tmp_path: Path, spawned: list[pexpect.spawn]) -> None:
    child = _spawn(tmp_path)
    spawned.append(child)
    child.expect_exact("  2. No, exit")
    child.send("2")
    child.expect_exact("❯ 2. No, exit")
    child.send("\r")
    assert _exit_code(child) == 1
    assert not (tmp_path / "home" / "state.json").exists()


def test_normal_turn(tmp_path: Path, spawned: list[pexpect.spawn]) -> None:
    trace = tmp_path / "trace.jsonl"
    child = _ready(spawned, tmp_path, "--trace", str(trace))
    _submit(child, "hello")
    child.expect(r"[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] Thinking… \(0s · esc to interrupt\)")
    child.expect_exact("\x1b]0;✳ demo-agent\x07")
    child.expect_exact("> hello")
    child.expect_exact("Echo: hello")
    child.expect_exact("Tokens: 1 sent, 2 received. Cost: $0.0003 message.")
    child.expect_exact("  ? for shortcuts")
    states = [json.loads(line)["state"] for line in trace.read_text().splitlines()]
    assert states[0] == "idle" and "busy" in states and states[-1] == "idle"
    assert json.loads((tmp_path / "home" / "state.json").read_text())["turns"] == 1


def test_burst_guard(tmp_path: Path, spawned: list[pexpect.spawn]) -> None:
    child = _ready(spawned, tmp_path)
    child.send("abc\r")  # text and Enter in one write: a paste, not a submit
    child.expect_exact("❯ abc ↵ ")
    with pytest.raises(pexpect.TIMEOUT):
        child.expect_exact("Thinking…", timeout=0.5)
    child.send("def")
    child.expect_exact("❯ abc ↵ def")
    child.send("\r")
    child.expect_exact("> abc")
    child.expect_exact("  def")
    child.expect_exact("Echo: abc")
    child.expect_exact("def")
    child.expect_exact("Tokens: 2 sent, 3 received.")


def test_burst_guard_can_be_disabled(tmp_path: Path, spawned: list[pexpect.spawn]) -> None:
    child = _ready(spawned, tmp_path, "--no-burst-guard")
    child.send("quick\r")
    child.expect_exact("Echo: quick")


def test_bracketed_paste_newline_is_not_a_submit(
    tmp_path: Path, spawned: list[pexpect.spawn]
) -> None:
    child = _ready(spawned, tmp_path)
    child.send("\x1b[200~one\rtw")
    child.send("o\x1b[20")
    child.send("1~")
    child.expect_exact("❯ one ↵ two")
    child.send("\x1b[A")  # an arrow key must not leak into the input
    child.send("\r")
    child.expect_exact("Echo: one")


def test_edit_accepted_writes_the_file(tmp_path: Path, spawned: list[pexpect.spawn]) -> None:
    child = _ready(spawned, tmp_path)
    _submit(child, "edit sub/out.txt: hello world")
    child.expect_exact("\x1b]0;? demo-agent\x07")
    child.expect_exact("  Apply edit to sub/out.txt? (y)es/(n)o")
    child.send("y")
    child.expect_exact("Thinking…")
    child.expect_exact("Wrote 12 bytes to sub/out.txt")
    child.expect_exact("  ? for shortcuts")
    assert (tmp_path / "sub" / "out.txt").read_text() == "hello world\n"


def test_edit_declined(tmp_path: Path, spawned: list[pexpect.spawn]) -> None:
    child = _ready(spawned, tmp_path)
    _submit(child, "edit no.txt: nope")
    child.expect_exact("  Apply edit to no.txt? (y)es/(n)o")
    child.send("n")
    child.expect_exact("Edit to no.txt declined.")
    child.expect_exact("  ? for shortcuts")
    assert not (tmp_path / "no.txt").exists()


def test_lines_and_fail(tmp_path: Path, spawned: list[pexpect.spawn]) -> None:
    child = _ready(spawned, tmp_path)
    _submit(child, "lines 3")
    for k in (1, 2, 3):
        child.expect_exact(f"line {k} of 3")
    child.expect_exact("Tokens: 2 sent, 12 received. Cost: $0.0014 message.")
    child.expect_exact("  ? for shortcuts")
    _submit(child, "fail")
    child.expect_exact("Error: simulated failure")


def test_escape_interrupts_a_turn(tmp_path: Path, spawned: list[pexpect.spawn]) -> None:
    child = _spawn(tmp_path, "--no-first-run", "--think", "30")
    spawned.append(child)
    child.expect_exact("  ? for shortcuts")
    _submit(child, "long job")
    child.expect_exact("Thinking…")
    child.send("\x1b")
    child.expect_exact("Interrupted.")
    child.expect_exact("  ? for shortcuts")


def test_exit_command(tmp_path: Path, spawned: list[pexpect.spawn]) -> None:
    child = _ready(spawned, tmp_path)
    _submit(child, "/exit")
    child.expect_exact("Bye.")
    assert _exit_code(child) == 0


def test_double_ctrl_c_exits(tmp_path: Path, spawned: list[pexpect.spawn]) -> None:
    child = _ready(spawned, tmp_path)
    child.send("\x03")
    child.expect_exact("  Press Ctrl-C again to exit")
    child.send("\x03")
    assert _exit_code(child) == 0


def test_sigterm_exit_code(tmp_path: Path, spawned: list[pexpect.spawn]) -> None:
    child = _ready(spawned, tmp_path)
    child.kill(signal.SIGTERM)
    child.expect_exact("\x1b[?2004l")  # bracketed paste switched off on the way out
    assert _exit_code(child) == 128 + signal.SIGTERM


def test_resume_shows_turn_count(tmp_path: Path, spawned: list[pexpect.spawn]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "state.json").write_text(json.dumps({"trusted": [], "turns": 7}))
    child = _spawn(tmp_path, "--no-first-run", "--resume")
    spawned.append(child)
    child.expect_exact("Resumed previous session (7 turns)")
    child.expect_exact("  ? for shortcuts")
