"""`aimterm adapter doctor`: a missing tool fails in one line, a tool without a model to fake
gets the start-up and quit checks. (The agent CLIs are checked live in
tests/live/test_doctor_live.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _doctor(*args: str, adapters: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if adapters is not None:
        env["AIMTERM_ADAPTER_PATH"] = str(adapters)
    return subprocess.run([sys.executable, "-m", "aimterm", "adapter", "doctor", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_a_missing_tool_fails_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "ghost.yaml").write_text("extends: bash\nname: ghost\ncommand: [no-such-tool-q]\n")
    out = _doctor("ghost", adapters=tmp_path)
    assert out.returncode == 1, out
    assert "✗ found     'no-such-tool-q' is not on PATH" in out.stdout
    assert out.stdout.rstrip().endswith("verdict: FAIL — ghost does not work with this adapter "
                                        "(found: see above)")
    data = json.loads(_doctor("ghost", "--json", adapters=tmp_path).stdout)
    assert data["verdict"] == "fail" and data["checks"][0]["check"] == "found"
    assert "Traceback" not in out.stderr


def test_a_tool_without_a_fake_model_gets_start_up_and_quit() -> None:
    out = _doctor("bash", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    checks = {c["check"]: c for c in data["checks"]}
    assert checks["found"]["status"] == "ok" and data["command"].endswith("bash")
    assert data["version"] and data["version"][0].isdigit()
    assert checks["start-up"]["status"] == "ok" and checks["quit"]["status"] == "ok"
    assert checks["turn"]["status"] == "skip"
    assert data["verdict"] == "ok"


def test_an_unknown_adapter_is_one_line() -> None:
    out = _doctor("no-such-adapter")
    assert out.returncode != 0 and "no-such-adapter" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
