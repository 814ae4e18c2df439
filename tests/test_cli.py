"""The command line: authoring commands, the demo, and errors as one line + exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from aimterm.cli.main import cli
from tests.helpers import FAKES

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("AIMTERM_ADAPTER_PATH", raising=False)
    return CliRunner()


def aimterm(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "aimterm", *args], capture_output=True,
                          text=True, cwd=cwd, env=full, timeout=timeout)


def test_adapter_list_names_origin(runner: CliRunner, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "python.yaml").write_text("extends: python\ndescription: mine\n")
    monkeypatch.setenv("AIMTERM_ADAPTER_PATH", str(extra))
    result = runner.invoke(cli, ["adapter", "list"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert "builtin" in lines["demo"] and "builtin" in lines["bash"]
    assert "env" in lines["python"] and "overrides" in lines["python"]


def test_adapter_show_resolves_extends(runner: CliRunner, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "mybash.yaml").write_text("extends: bash\nsettle_ms: 25\n")
    monkeypatch.setenv("AIMTERM_ADAPTER_PATH", str(extra))
    result = runner.invoke(cli, ["adapter", "show", "mybash"])
    assert result.exit_code == 0, result.output
    assert "settle_ms: 25" in result.output
    assert "--norc" in result.output  # inherited command
    assert "name: mybash" in result.output


def test_adapter_validate_ok_and_errors(runner: CliRunner, tmp_path: Path) -> None:
    good = REPO / "adapters" / "demo.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text("command: [x]\nsettle_ms: fast\nstates: [{state: idle, any: ['>']}]\n")
    result = runner.invoke(cli, ["adapter", "validate", str(good), str(bad)])
    assert result.exit_code == 2
    assert f"{good}: ok (demo," in result.output
    assert f"{bad}:2: settle_ms: expected an integer, got string 'fast'" in result.output


def test_adapter_schema_is_json_schema(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["adapter", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "states" in schema["properties"]


def test_unknown_adapter_is_one_line_and_nonzero() -> None:
    out = aimterm("adapter", "show", "no-such-tool")
    assert out.returncode == 3
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith("aimterm: no adapter named 'no-such-tool'")
    assert "Traceback" not in out.stderr


def test_adapter_test_prints_reply_timings_and_state_changes(tmp_path: Path) -> None:
    (tmp_path / "echo.yaml").write_text(f"""
command: ["{sys.executable}", "{FAKES}/echo_repl.py"]
detect: stream
states: [{{name: ready, state: idle, region: bottom:1, any: ['^ready>$']}}]
settle_ms: 0
submit: {{keys: [enter], verify: output}}
reply: {{from: stream, strip: [echo, prompt]}}
exit: {{keys: [exit, enter]}}
""")
    out = aimterm("adapter", "test", "echo", "--prompt", "hi there",
                  env={"AIMTERM_ADAPTER_PATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "| echo: hi there" in out.stdout
    assert "submit->busy" in out.stdout and "busy->idle" in out.stdout
    assert "starting -> idle" in out.stdout and "[ready]" in out.stdout
    assert "'ready>'" in out.stdout  # the text that caused the change


def test_adapter_test_json(tmp_path: Path) -> None:
    out = aimterm("adapter", "test", "python", "--prompt", "print(2**10)", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["turns"][0]["reply"] == "1024"
    kinds = {e["kind"] for e in data["events"]}
    assert {"state_changed", "turn_started", "turn_finished"} <= kinds


def test_demo_runs_a_fleet_and_summarises(tmp_path: Path) -> None:
    out = aimterm("demo", "--think", "0.05", env={"HOME": str(tmp_path)})
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "all 3 ready in" in text
    for n in (1, 2, 3):
        assert f"[demo-{n}] > " in text
    assert "| Echo: summarise the README" in text and "| line 3 of 3" in text
    assert "answered edit-in-tree" in text
    assert "asks 'Apply edit to /etc/motd? (y)es/(n)o'" in text and "declined" in text
    assert "12/12 prompts in" in text and "speedup" in text
    assert "files really written by the agents: changelog.txt, owner.txt, todo.txt" in text
    assert "done: 12/12 prompts answered" in text


def test_demo_live_display_and_ctrl_c_shut_down_cleanly(tmp_path: Path) -> None:
    import pexpect

    env = dict(os.environ, HOME=str(tmp_path))
    import signal

    # A person's terminal delivers Ctrl-C; a CI job may have started us with SIGINT ignored,
    # which the demo would inherit: give it the default disposition, as a shell would.
    child = pexpect.spawn(sys.executable, ["-m", "aimterm", "demo", "--think", "3"], env=env,
                          dimensions=(40, 120), encoding="utf-8", timeout=30,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        child.expect("all 3 ready in")
        child.expect(r"progress 0/12")  # the live display, drawn on a terminal
        child.expect(r"demo-1\s+busy")
        child.sendintr()
        child.expect("interrupted: the fleet was shut down cleanly")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130


def test_python_dash_m_and_version() -> None:
    out = aimterm("--version")
    assert out.returncode == 0 and "aimterm" in out.stdout


@pytest.mark.parametrize(("command", "words"), [
    (["answer"], ["INSTANCE_ID KEYS...", "key names", "--json"]),
    (["interrupt"], ["INSTANCE_ID", "interrupted", "--json"]),
    (["drain"], ["INSTANCE_ID", "--no-wait", "--json"]),
    (["screen"], ["INSTANCE_ID", "--lines", "--json"]),
    (["turns"], ["[INSTANCE_ID]", "--limit", "--json"]),
    (["events"], ["--kind", "--instance", "--since", "--follow", "--json"]),
])
def test_fleet_commands_have_help(runner: CliRunner, command: list[str],
                                  words: list[str]) -> None:
    result = runner.invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    for word in words:
        assert word in result.output, (command, word)
    assert "--state-dir" in result.output and "--config" in result.output


def test_fleet_commands_check_their_arguments_before_connecting(runner: CliRunner) -> None:
    for args in (["screen", "x", "-n", "0"], ["turns", "-n", "1001"], ["answer", "x"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
