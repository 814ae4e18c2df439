"""The adapter test kit: recordings made live, replayed through the rules by explain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from aimterm.adapter.registry import load_adapter
from aimterm.adapter.replay import explain, explain_file
from aimterm.events import StateChanged
from aimterm.session import Session
from aimterm.term.transcript import Recording
from tests.helpers import SPINNER, fake_adapter


def test_live_demo_session_replays_to_the_same_decisions(tmp_path: Path) -> None:
    cast = tmp_path / "demo.cast"
    env = {"AIMTERM_DEMO_THINK": "0.2", "AIMTERM_DEMO_HOME": str(tmp_path / "home")}
    with Session("demo", cwd=tmp_path, env=env, transcript=cast) as s:
        s.send("hello")
        s.send("edit a.txt: x")
    live = [e.new for e in s.events() if isinstance(e, StateChanged)
            and e.new in ("idle", "busy", "waiting")]
    result = explain_file(load_adapter("demo"), str(cast))
    assert result.flags == []
    assert result.turns == 2
    assert result.states() == live == ["idle", "busy", "idle", "busy", "idle"]
    assert [r for _t, r, _q in result.answered] == ["trust-folder", "edit-in-tree"]
    assert result.changes[0].rule == "prompt" and "❯" in result.changes[0].text


def _rec(events: list[tuple[float, str, str]], rows: int = 24, cols: int = 80) -> Recording:
    return Recording({"version": 2, "width": cols, "height": rows}, events)


def test_flags_idle_over_a_busy_marker_and_a_turn_that_never_ended() -> None:
    spec = fake_adapter("""
command: [x]
states: [{name: prompt, state: idle, region: cursor, any: ['^> ?$']}]
settle_ms: 100
""")
    rec = _rec([
        (0.0, "o", "> "),
        (0.5, "i", "go\r"),
        (0.6, "o", "go\r\n⠋ working (esc to interrupt)\r\n> "),
        (4.0, "i", "again\r"),
        (4.1, "o", "again\r\nstill going"),
    ])
    result = explain(spec, rec)
    kinds = [f.kind for f in result.flags]
    assert "idle-with-busy-marker" in kinds
    assert kinds[-1] == "turn-never-ended"
    assert result.turns == 2


def test_settle_is_applied_on_the_recording_clock() -> None:
    spec = fake_adapter(SPINNER)
    rec = _rec([
        (0.0, "o", "> "),
        (1.0, "i", "x\r"),
        (1.05, "o", "x\r\n\x1b]0;⠋ spinner-cli\x07⠋ working (esc to interrupt)"),
        (1.30, "o", "\r\x1b[K\x1b]0;spinner-cli\x07result: x\r\n> "),
    ])
    result = explain(spec, rec)
    assert [(c.new, round(c.t, 3)) for c in result.changes] == \
        [("idle", 0.1), ("busy", 1.0), ("idle", 1.4)]
    assert result.changes[-1].rule == "prompt"
    assert result.flags == []


def test_cli_record_and_explain(tmp_path: Path) -> None:
    cast = tmp_path / "rec.cast"
    env = dict(os.environ, HOME=str(tmp_path), AIMTERM_DEMO_THINK="0.05")
    rec = subprocess.run([sys.executable, "-m", "aimterm", "adapter", "record", "demo", "-o",
                          str(cast), "--prompt", "one", "--prompt", "two", "--cwd",
                          str(tmp_path)], capture_output=True, text=True, env=env, timeout=60,
                         check=False)
    assert rec.returncode == 0, rec.stderr
    assert f"saved {cast}" in rec.stdout
    header = json.loads(cast.read_text().splitlines()[0])
    assert header["version"] == 2 and header["width"] == 120
    markers = [json.loads(line)[2] for line in cast.read_text().splitlines()[1:]
               if json.loads(line)[1] == "m"]
    assert any(m.startswith("state idle->busy") for m in markers)
    out = subprocess.run([sys.executable, "-m", "aimterm", "adapter", "explain", str(cast),
                          "--adapter", "demo", "--json"], capture_output=True, text=True,
                         env=env, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["turns"] == 2 and data["flags"] == []
    assert [c["new"] for c in data["changes"]] == ["idle", "busy", "idle", "busy", "idle"]
    bad = tmp_path / "bad.cast"
    bad.write_text('{"version": 2, "width": 80, "height": 24}\nnot json\n')
    out = subprocess.run([sys.executable, "-m", "aimterm", "adapter", "explain", str(bad),
                          "--adapter", "demo"], capture_output=True, text=True, env=env,
                         timeout=60, check=False)
    assert out.returncode == 2 and f"{bad}:2:" in out.stderr
