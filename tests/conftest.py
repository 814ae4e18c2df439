"""Shared fixtures. Every test runs with a leak check: a process it started and left behind
(child, grandchild, or a process that escaped with setsid) fails the test."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

FAKES = Path(__file__).parent / "fakes"
REPO = Path(__file__).resolve().parent.parent
LEAK_ENV = "AIMTERM_TEST_LEAK_TOKEN"


def _holders(token: str) -> list[psutil.Process]:
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get(LEAK_ENV) == token:
            found.append(proc)
    return found


@pytest.fixture(autouse=True)
def no_leaked_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tag every process the test starts (through the inherited environment) and fail the
    test if any tagged process outlives it. Leftovers are killed so one leak cannot cascade."""
    token = uuid.uuid4().hex
    old = os.environ.get(LEAK_ENV)
    os.environ[LEAK_ENV] = token
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(LEAK_ENV, None)
        else:
            os.environ[LEAK_ENV] = old
    # A process reaped a moment ago may still be finishing its exit: give it a short grace.
    deadline = time.monotonic() + 2.0
    left = _holders(token)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    if left:
        desc = []
        for proc in left:
            try:
                desc.append(f"{proc.pid} {' '.join(proc.cmdline())}")
                proc.kill()
            except psutil.Error:
                pass
        pytest.fail("test left processes behind:\n  " + "\n  ".join(desc), pytrace=False)


@pytest.fixture
def fakes() -> Path:
    return FAKES


@pytest.fixture
def python() -> str:
    return sys.executable
