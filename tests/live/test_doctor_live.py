"""`aimterm adapter doctor` against each real agent CLI: found, version, start-up, a live turn
against the fake model the command starts itself, quit — and no failure."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aimterm.testing.clis import find_cli


@pytest.mark.parametrize("tool", ["aider", "claude", "codex", "gemini"])
def test_doctor_passes_on_the_installed_cli(tool: str) -> None:
    if find_cli(tool) is None:
        pytest.skip(f"{tool} is not installed (scripts/install-agent-clis installs it)")
    out = subprocess.run([sys.executable, "-m", "aimterm", "adapter", "doctor", tool, "--json"],
                         capture_output=True, text=True, timeout=300)
    data = json.loads(out.stdout)
    checks = {c["check"]: c for c in data["checks"]}
    assert out.returncode == 0 and data["verdict"] in ("ok", "warn"), data
    for name in ("found", "version", "start-up", "idle", "quit"):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks["reply"]["status"] in ("ok", "warn")
    assert data["turn"]["status"] == "done" and data["turn"]["reply"]
