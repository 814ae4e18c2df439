"""aimterm's pytest plugin (``aimterm.testing.plugin``, the ``pytest11`` entry point).

The fixtures are used here as a user's tests would use them; the opt-in leak check and the
plugin's registration are checked in a separate pytest run (``pytester``), where this
project's conftest (which turns the check on for every test) is not in the way.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from pathlib import Path

import pytest

from aimterm.adapter.registry import load_adapter
from aimterm.testing import FakeModel
from aimterm.testing.offline import CLAUDE_FOREIGN_ENV
from aimterm.testing.plugin import AdapterDir, Fleets, OfflineEnv
from tests.helpers import ECHO, FAKES, wait_for

pytest_plugins = ["pytester"]


@pytest.mark.aimterm_fake_model(prompts=["say hi"], think_s=0)
def test_fake_model_and_offline_envs(aimterm_fake_model: FakeModel,
                                     aimterm_offline_env: OfflineEnv, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fake = aimterm_fake_model
    assert fake.url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(fake.url + "/", timeout=5) as reply:
        assert reply.status == 200
    assert fake.find_prompt("<user-prompt>say hi</user-prompt>") == "say hi"

    monkeypatch.setenv("CLAUDECODE", "1")
    claude = aimterm_offline_env("claude", tmp_path / "claude",
                                 settings={"permissions": {"defaultMode": "manual"}})
    assert claude["ANTHROPIC_BASE_URL"] == fake.url and claude["HOME"] == str(tmp_path / "claude")
    assert json.loads((tmp_path / "claude" / ".claude" / "settings.json").read_text()) == \
        {"permissions": {"defaultMode": "manual"}}
    assert not set(CLAUDE_FOREIGN_ENV) & set(os.environ)  # instances must not inherit them

    codex = aimterm_offline_env("codex")  # a HOME of its own, out of /tmp
    assert not codex["HOME"].startswith("/tmp/")
    config = (Path(codex["CODEX_HOME"]) / "config.toml").read_text()
    assert f'base_url = "{fake.url}/v1"' in config and "daemon_auto_start = false" in config

    gemini = aimterm_offline_env("gemini", tmp_path / "gemini", trust=[tmp_path])
    assert gemini["GOOGLE_GEMINI_BASE_URL"] == fake.url
    assert json.loads((tmp_path / "gemini" / ".gemini" / "trustedFolders.json").read_text()) \
        == {str(tmp_path): "TRUST_FOLDER"}

    aider = aimterm_offline_env("aider", model="m1")
    assert f"openai-api-base: {fake.url}/v1" in \
        (Path(aider["HOME"]) / ".aider.conf.yml").read_text()
    with pytest.raises(ValueError, match="no offline setup for 'vim'"):
        aimterm_offline_env("vim")
    # The HOMEs it made itself go after the test (this is what its teardown calls).
    aimterm_offline_env.cleanup()
    assert not os.path.exists(codex["HOME"]) and not os.path.exists(aider["HOME"])
    assert os.path.isdir(claude["HOME"])  # the test's own folder is left alone


def test_adapters_and_fleets(aimterm_adapters: AdapterDir, aimterm_fleet: Fleets,
                             tmp_path: Path) -> None:
    aimterm_adapters.add("echo", ECHO.replace("{py}", sys.executable)
                         .replace("{fakes}", str(FAKES)))
    assert load_adapter("echo").name == "echo"

    fleet = aimterm_fleet("echo", count=2)
    assert fleet.send("hello", timeout=10).reply == "echo: hello"
    config = tmp_path / "cluster.yaml"
    config.write_text("instances:\n  - adapter: echo\n    count: 1\n    tags: [solo]\n")
    solo = aimterm_fleet.from_config(config)
    assert [row["id"] for row in solo.get_status()] == ["echo-1"]
    assert solo.send("again", tags=["solo"], timeout=10).reply == "echo: again"
    pids = [i.session.pid for f in (fleet, solo) for i in f.pool.instances()]
    aimterm_fleet.shutdown()
    assert aimterm_fleet.started == []
    for pid in pids:
        assert pid is not None
        wait_for(lambda pid=pid: _gone(pid), f"instance {pid} to be gone")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


# -- the leak check is opt-in, and the plugin loads from its entry point ---------------------

LEAKY = """
import os, sys
import pytest

def _leak(name):
    # Escapes into a session of its own, and nobody waits for it.
    pid = os.posix_spawn(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)"],
                         os.environ, setsid=True)
    with open(os.path.join({out!r}, name), "w") as f:
        f.write(str(pid))

{marker}
def test_leaks():
    _leak("pid")
"""


def _run_leaky(pytester: pytest.Pytester, tmp_path: Path, marker: str, *ini: str
               ) -> tuple[pytest.RunResult, int]:
    out = tmp_path / "out"
    out.mkdir()
    pytester.makepyfile(test_leaky=LEAKY.format(out=str(out), marker=marker))
    if ini:
        pytester.makeini("[pytest]\n" + "\n".join(ini) + "\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    return result, int((out / "pid").read_text())


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    wait_for(lambda: _gone(pid), f"process {pid} to be gone")


@pytest.mark.parametrize(("marker", "ini"), [
    ("@pytest.mark.aimterm_no_leaks", ()),
    ("", ("aimterm_no_leaks = true",)),
])
def test_leak_check_when_asked_for(pytester: pytest.Pytester, tmp_path: Path, marker: str,
                                   ini: tuple[str, ...]) -> None:
    result, pid = _run_leaky(pytester, tmp_path, marker, *ini)
    try:
        result.assert_outcomes(passed=1, errors=1)
        result.stdout.fnmatch_lines(["*test left processes behind:*", f"*{pid} *sleep(60)*"])
        wait_for(lambda: _gone(pid), "the leftover to be killed")
    finally:
        _kill(pid)


def test_leak_check_is_off_unless_asked_for(pytester: pytest.Pytester, tmp_path: Path) -> None:
    result, pid = _run_leaky(pytester, tmp_path, "")
    try:
        result.assert_outcomes(passed=1)
        assert not _gone(pid)  # nobody looked
    finally:
        _kill(pid)


def test_fixtures_come_from_the_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*fixtures defined from aimterm.testing.plugin*"])
    for name in ("aimterm_fake_model", "aimterm_offline_env", "aimterm_adapters",
                 "aimterm_fleet", "aimterm_no_leaks"):
        result.stdout.fnmatch_lines([f"{name} -- *"])
    disabled = pytester.runpytest_subprocess("--fixtures", "-p", "no:aimterm")
    assert "aimterm_fleet" not in disabled.stdout.str()
