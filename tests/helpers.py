"""Test helpers: adapters for the fake CLIs, and waiting with a deadline."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from aimterm.adapter.loader import load_text
from aimterm.adapter.spec import AdapterSpec

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


ECHO = """
command: ["{py}", "{fakes}/echo_repl.py"]
detect: stream
states:
  - {state: idle, region: bottom:1, any: ['^ready>$']}
settle_ms: 0
submit: {keys: [enter], verify: output}
reply: {from: stream, strip: [echo, prompt]}
exit: {keys: [exit, enter], timeout_s: 3}
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
