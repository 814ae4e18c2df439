"""Checks that the scripted fake CLIs in tests/fakes behave as their docstrings say."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator

import pexpect
import psutil
import pytest

from tests.conftest import FAKES

Spawn = Callable[..., pexpect.spawn]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    children: list[pexpect.spawn] = []

    def _spawn(name: str, **env: str) -> pexpect.spawn:
        child = pexpect.spawn(
            sys.executable,
            [str(FAKES / name)],
            dimensions=(24, 80),
            env={**os.environ, **env},
            encoding="utf-8",
            timeout=10,
        )
        child.delaybeforesend = None
        children.append(child)
        return child

    yield _spawn
    for child in children:
        child.close(force=True)


def _exit_code(child: pexpect.spawn) -> int | None:
    child.expect(pexpect.EOF)
    child.close()
    status: int | None = child.exitstatus
    return status


def test_fakes_are_executable() -> None:
    for path in FAKES.glob("*.py"):
        assert os.access(path, os.X_OK), path
        assert path.read_text().startswith("#!/usr/bin/env python3\n"), path


def test_echo_repl(spawn: Spawn) -> None:
    child = spawn("echo_repl.py")
    child.expect_exact("ready> ")
    child.sendline("hi there")
    child.expect_exact("echo: hi there")
    child.expect_exact("ready> ")
    child.sendline("exit")
    assert _exit_code(child) == 0


def test_spinner_cli(spawn: Spawn) -> None:
    child = spawn("spinner_cli.py", FAKE_THINK="0.2")
    child.expect_exact("> ")
    child.send("job")
    child.expect_exact("job")
    child.send("\r")
    spin = "[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]"
    child.expect(rf"\x1b\]0;{spin} spinner-cli\x07\r{spin} working \(esc to interrupt\)")
    child.expect_exact("\x1b]0;spinner-cli\x07result: job\r\n> ")
    child.send("long")
    child.expect_exact("long")
    child.send("\r")
    child.expect_exact("working (esc to interrupt)")
    child.send("\x1b")
    child.expect_exact("\r\ninterrupted\r\n> ")
    child.send("quit\r")
    assert _exit_code(child) == 0


def test_cursor_query_answered(spawn: Spawn) -> None:
    child = spawn("cursor_query.py")
    child.expect_exact("\x1b[6n")
    child.send("\x1b[5;9R")
    child.expect_exact("cursor at 5;9\r\n$ ")
    child.send("ls\r")
    child.expect_exact("\r\nok: ls\r\n$ ")
    child.send("quit\r")
    assert _exit_code(child) == 0


def test_cursor_query_unanswered(spawn: Spawn) -> None:
    child = spawn("cursor_query.py")
    child.expect_exact("no answer to cursor query")
    assert _exit_code(child) == 3


def test_crash_on_start(spawn: Spawn) -> None:
    child = spawn("crash_on_start.py")
    child.expect_exact("fatal: config file is corrupt")
    assert _exit_code(child) == 3


def test_confirm_cli(spawn: Spawn) -> None:
    child = spawn("confirm_cli.py")
    child.expect_exact("cmd> ")
    child.sendline("do laundry")
    child.expect_exact("Proceed with laundry? (y/n) ")
    child.sendline("y")
    child.expect_exact("did laundry")
    child.expect_exact("cmd> ")
    child.sendline("do dishes")
    child.expect_exact("Proceed with dishes? (y/n) ")
    child.sendline("n")
    child.expect_exact("skipped dishes")
    child.sendline("what")
    child.expect_exact("unknown: what")
    child.sendline("quit")
    assert _exit_code(child) == 0


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.02)


def test_slow_exit_ignores_term_and_leaves_grandchild(spawn: Spawn) -> None:
    child = spawn("slow_exit.py", FAKE_EXIT_DELAY="0.3")
    child.expect(r"grandchild (\d+)\r\n")
    grandchild = int(child.match.group(1))
    try:
        child.expect_exact("slow> ")
        grand = psutil.Process(grandchild)
        assert os.getpgid(grandchild) == os.getpgid(child.pid)
        child.kill(signal.SIGTERM)
        child.kill(signal.SIGHUP)
        time.sleep(0.3)
        assert child.isalive() and grand.is_running()
        child.sendline("hello")
        child.expect_exact("ok: hello")
        start = time.monotonic()
        child.sendline("quit")
        assert _exit_code(child) == 0
        assert time.monotonic() - start >= 0.25
        assert grand.is_running() and grand.status() != psutil.STATUS_ZOMBIE
    finally:
        _kill_pid(grandchild)


def test_slow_exit_honours_term_when_asked(spawn: Spawn) -> None:
    child = spawn("slow_exit.py", FAKE_HONOUR_TERM="1")
    child.expect(r"grandchild (\d+)\r\n")
    grandchild = int(child.match.group(1))
    try:
        child.expect_exact("slow> ")
        child.kill(signal.SIGTERM)
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 143
    finally:
        _kill_pid(grandchild)
