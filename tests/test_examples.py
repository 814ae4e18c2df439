"""The scripts in examples/ run end to end against the demo agent and shut their fleet down."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FLAGS = ["--count", "2", "--think", "0.05"]


def run_example(name: str, tmp_path: Path, *extra: str) -> str:
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), PYTHONUNBUFFERED="1")
    env.pop("AIMTERM_DEMO_HOME", None)
    env.pop("AIMTERM_DEMO_THINK", None)
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *FLAGS, *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{proc.stderr}"
    # The demo agent's state went to the script's temporary home, not the real one.
    assert not (home / ".aimterm-demo-agent").exists()
    return out


def test_parallel_refactor(tmp_path: Path) -> None:
    out = run_example("parallel_refactor.py", tmp_path)
    assert "files changed on disk: 5/5" in out
    assert "original repo untouched: yes" in out
    table = re.findall(r"^(src/shop/\S+)\s+(demo-\d)\s+changed$", out, re.MULTILINE)
    assert len(table) == 5
    assert {iid for _, iid in table} == {"demo-1", "demo-2"}  # the work was spread
    assert "turns: 10 ok, 0 failed" in out


def test_multi_agent_review(tmp_path: Path) -> None:
    out = run_example("multi_agent_review.py", tmp_path)
    assert "reviews: 2/2 received" in out
    assert "consensus: 2/2 identical (unanimous" in out
    for iid in ("demo-1", "demo-2"):
        assert re.search(rf"^\[{iid}\] review in .*: Echo: Review", out, re.MULTILINE)
        assert re.search(rf"^  {iid}: 1 turn$", out, re.MULTILINE)


def test_distributed_test_gen(tmp_path: Path) -> None:
    items = 4
    out_dir = tmp_path / "generated"
    out = run_example("distributed_test_gen.py", tmp_path, "--out", str(out_dir),
                      "--items", str(items))
    assert f"test files written: {items}/{items}" in out
    files = sorted(out_dir.glob("test_*.py"))
    assert len(files) == items
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert "Echo: write tests for" in text, text
    assert re.search(r"^throughput: \d+\.\d+ prompts/s$", out, re.MULTILINE)
    assert re.search(r"^speedup: \d+\.\d+x over one after another", out, re.MULTILINE)
    per = dict(re.findall(r"^  (demo-\d): (\d+) turns?$", out, re.MULTILINE))
    assert sum(map(int, per.values())) == items and set(per) == {"demo-1", "demo-2"}
