"""Test helpers: adapters for the fake CLIs, and waiting with a deadline."""

from __future__ import annotations

import concurrent.futures
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from aimterm.adapter.loader import load_text
from aimterm.adapter.registry import AdapterRegistry
from aimterm.adapter.spec import AdapterSpec
from aimterm.pool import Pool
from aimterm.session import Turn
from aimterm.testing.fakemodel import FakeModel

FAKES = Path(__file__).parent / "fakes"
T = TypeVar("T")


def wait_for(cond: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    """Poll ``cond`` until it returns something truthy; fail saying what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.01)


def fake_adapter(yaml_text: str, name: str = "fake") -> AdapterSpec:
    return load_text(yaml_text.replace("{fakes}", str(FAKES)).replace("{py}", sys.executable),
                     f"{name}.yaml")


def extended_adapter(yaml_text: str, path: Path | str) -> AdapterSpec:
    """An adapter file that ``extends`` a built-in one, loaded the way the registry would
    (its parent found by name). Given a Path, the text is written there first, so errors and
    provenance name a real file."""
    if isinstance(path, Path):
        path.write_text(yaml_text)
    return load_text(yaml_text, str(path), resolver=AdapterRegistry().resolve_parent)


ECHO = """
command: ["{py}", "{fakes}/echo_repl.py"]
detect: stream
states:
  - {state: idle, region: bottom:1, any: ['^ready>$']}
settle_ms: 0
submit: {keys: [enter], verify: output}
reply: {from: stream, strip: [echo, prompt]}
exit: {keys: [exit, enter], timeout_s: 3}
resume: [--resume]
"""

SPINNER = """
command: ["{py}", "{fakes}/spinner_cli.py"]
detect: screen
terminal: {rows: 24, cols: 80}
states:
  - {name: spin, state: busy, priority: 20, region: cursor, any: ['esc to interrupt'], title: '^[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]'}
  - {name: prompt, state: idle, priority: 10, region: cursor, any: ['^> ?$']}
settle_ms: 100
submit: {keys: [enter], delay_ms: 20, verify: busy, verify_timeout_ms: 2000}
reply: {from: screen-delta, strip: [echo, prompt]}
exit: {keys: [quit, enter], timeout_s: 3}
interrupt: {keys: [escape]}
"""

CONFIRM = """
command: ["{py}", "{fakes}/confirm_cli.py"]
detect: stream
states:
  - {name: ask, state: waiting, priority: 20, region: bottom:1, any: ['Proceed with .*\\? \\(y/n\\)$']}
  - {name: prompt, state: idle, priority: 10, region: bottom:1, any: ['^cmd>$']}
settle_ms: 0
submit: {keys: [enter], verify: output}
answers:
  - {name: safe, match: 'Proceed with (?P<thing>\\S+)\\?', when: {thing: '^safe'}, send: [y, enter]}
reply: {from: stream, strip: [echo, prompt]}
exit: {keys: [quit, enter], timeout_s: 3}
"""


def use_adapter_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                         text: str) -> None:
    """Put a user adapter ``name`` (usually ``extends: name`` plus a policy) on the search
    path, with no other user adapters in the way."""
    folder = tmp_path / "adapters"
    folder.mkdir()
    (folder / f"{name}.yaml").write_text(text)
    monkeypatch.setenv("AIMTERM_ADAPTER_PATH", str(folder))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def fleet_screens(pool: Pool) -> str:
    """Every instance's state, window title and screen, for a failure message."""
    out = []
    for inst in pool.instances():
        s = inst.session
        title = s.terminal.screen.snapshot().title if s.terminal else ""
        out.append(f"--- {inst.id} {s.state} title={title!r}")
        out.extend(line for line in s.screen_lines() if line.strip())
    return "\n".join(out)


def fleet_result(pool: Pool, future: concurrent.futures.Future[Turn], timeout: float,
                 fake: FakeModel | None = None) -> Turn:
    """The turn of ``future``, or a test failure showing every screen and what the fake
    model was asked."""
    try:
        return future.result(timeout)
    except TimeoutError:
        seen = ([(r.endpoint, r.answer_kind, (r.prompt or "")[:30]) for r in fake.requests]
                if fake else [])
        pytest.fail(f"no result after {timeout:g}s\n{fleet_screens(pool)}\nrequests: {seen}",
                    pytrace=False)


#: Where live tests put their scratch folders: codex refuses to create its helper binaries
#: under /tmp, where pytest's tmp_path lives.
VAR_TMP_ROOT = Path("/var/tmp/aimterm-tests")


def var_tmp_dir(prefix: str) -> Iterator[Path]:
    """A fresh folder under :data:`VAR_TMP_ROOT` for a fixture to yield; removed after (and
    the root too, once empty)."""
    VAR_TMP_ROOT.mkdir(parents=True, exist_ok=True)
    path = VAR_TMP_ROOT / f"{prefix}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        try:
            VAR_TMP_ROOT.rmdir()
        except OSError:
            pass


#: Codex's edit approval, with the file it would write as ``file`` (for an answer rule's
#: ``when``): the built-in adapter approves nothing, so tests that let codex edit add a rule.
CODEX_EDIT_QUESTION = (r"Would you like to make the following edits\?(?:\n.*){0,6}?\n"
                       r"  Destination: (?P<file>/\S+)")
