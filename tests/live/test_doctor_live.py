"""`aimterm adapter doctor` against each real agent CLI, at the pinned version and at a second
one (``$AIMTERM_CLI_HOME/alt``, installed by scripts/install-agent-clis): found, version,
start-up, a live turn against the fake model the command starts itself, quit — no failure,
and the reply exactly the model's text where the adapter reads the tool's record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aimterm.adapter.registry import load_adapter
from aimterm.testing.clis import cli_home

SETS = {"pinned": cli_home(), "alt": cli_home() / "alt"}


#: aider comes from PyPI into a venv of its own: only the npm CLIs have a second version here.
CASES = [(tool, "pinned") for tool in ("aider", "claude", "codex", "gemini")] + \
    [(tool, "alt") for tool in ("claude", "codex", "gemini")]


@pytest.mark.parametrize(("tool", "version_set"), CASES)
def test_doctor_passes_on_the_installed_cli(tool: str, version_set: str) -> None:
    home: Path = SETS[version_set]
    if not os.access(home / "bin" / tool, os.X_OK):
        pytest.skip(f"{tool} is not installed in {home} (scripts/install-agent-clis does it)")
    env = {**os.environ, "AIMTERM_CLI_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "aimterm", "adapter", "doctor", tool, "--json"],
                         capture_output=True, text=True, timeout=300, env=env)
    data = json.loads(out.stdout)
    checks = {c["check"]: c for c in data["checks"]}
    assert out.returncode == 0 and data["verdict"] in ("ok", "warn"), data
    assert data["command"].startswith(str(home)), data["command"]
    for name in ("found", "start-up", "idle", "quit"):
        assert checks[name]["status"] == "ok", checks[name]
    # A version the adapter does not list (scripts/check-agent-drift tries the newest) is a
    # warning, not a failure.
    assert checks["version"]["status"] == "ok" or (
        data["version"] not in data["verified"] and checks["version"]["status"] == "warn")
    assert data["turn"]["status"] == "done" and data["turn"]["reply"]
    if load_adapter(tool).reply.record is not None:
        assert checks["reply"]["status"] == "ok", checks["reply"]
        assert data["turn"]["reply_source"] == "record"
