"""A plain (non-editable) install into a fresh virtual environment ships the built-in
adapters and the console scripts. Slow-ish (builds a wheel), so it runs once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    py = root / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", str(REPO)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


def _run(root: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["XDG_CONFIG_HOME"] = str(cwd / "config")
    env["HOME"] = str(cwd)
    env.pop("AIMTERM_ADAPTER_PATH", None)
    return subprocess.run([str(root / "bin" / "aimterm"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_wheel_install_lists_builtin_adapters(installed: Path, tmp_path: Path) -> None:
    out = _run(installed, "adapter", "list", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    listed = {a["name"]: a for a in json.loads(out.stdout)}
    assert {"demo", "bash", "python"} <= set(listed)
    for info in listed.values():
        assert info["origin"] == "builtin"
        assert str(installed) in info["path"], "adapters must come from the install, not the repo"
        assert str(REPO) not in info["path"]


def test_wheel_install_runs_the_demo_agent(installed: Path, tmp_path: Path) -> None:
    out = _run(installed, "adapter", "test", "demo", "--prompt", "packaged", "--json",
               cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["turns"][0]["reply"] == "Echo: packaged"
    agent = installed / "bin" / "aimterm-demo-agent"
    assert agent.exists()
    piped = subprocess.run([str(agent)], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
    assert piped.returncode == 2 and "must be a terminal" in piped.stderr
    assert sys.executable  # the outer interpreter is untouched
