"""Shared fixtures. Every test runs with the leak check of aimterm's pytest plugin
(``aimterm_no_leaks``, from the package's ``pytest11`` entry point): a process it started and
left behind (child, grandchild, or a process that escaped with setsid) fails the test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aimterm.testing.leaks import LeakCheck

FAKES = Path(__file__).parent / "fakes"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_leaked_processes(aimterm_no_leaks: LeakCheck) -> Iterator[None]:
    yield


@pytest.fixture
def fakes() -> Path:
    return FAKES


@pytest.fixture
def python() -> str:
    return sys.executable
