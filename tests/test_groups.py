"""Groups held in a daemon's fleet (the ``group`` stream): started for a client in its folder,
in the daemon's status, gone when released or when the client dies; and the Python
Orchestrator's own lanes held there when it runs against a daemon."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aimterm import Orchestrator
from aimterm.config import resolve_config
from aimterm.daemon import Daemon
from aimterm.errors import AdapterNotFound, ProtocolError
from aimterm.ipc.fleet import RemoteFleet
from tests.helpers import wait_for


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    root = Path(tempfile.mkdtemp(prefix="atg-", dir="/tmp"))  # a socket path is short
    (root / "home").mkdir()
    config = root / "cluster.yaml"
    config.write_text(f"state_dir: {root / 'state'}\ninstances:\n"
                      f"  - {{adapter: bash, count: 1, cwd: {root / 'home'}}}\n")
    d = Daemon(resolve_config(str(config), None))
    d.start()
    try:
        yield d
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)


def rows(fleet: RemoteFleet) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in fleet.status()}


def test_a_held_group_runs_in_its_folder_and_goes_when_released(daemon: Daemon,
                                                                 tmp_path: Path) -> None:
    with RemoteFleet(daemon.config.socket_path) as fleet:
        name = fleet.hold_group("bash", cwd=str(tmp_path), env={"MARK": "held"}, count=2)
        assert name.startswith("bash-")
        held = {i: r for i, r in rows(fleet).items() if r["group"] == name}
        assert set(held) == {f"{name}-1", f"{name}-2"}
        assert all(Path(r["cwd"]) == tmp_path for r in held.values())
        wait_for(lambda: all(rows(fleet)[i]["state"] == "idle" for i in held), "held idle")
        turn = fleet.send("pwd; echo $MARK", to=f"{name}-1")
        assert turn.reply == f"{tmp_path}\nheld"
        fleet.release_group(name).result(30)
        assert set(rows(fleet)) == {"bash-1"}  # the cluster's own is left alone


def test_a_client_that_dies_takes_its_group_with_it(daemon: Daemon, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from aimterm.ipc.fleet import RemoteFleet
        fleet = RemoteFleet({str(daemon.config.socket_path)!r})
        print(fleet.hold_group("bash", cwd={str(tmp_path)!r}), flush=True)
        time.sleep(60)
    """)
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                          text=True) as proc:
        try:
            assert proc.stdout is not None
            name = proc.stdout.readline().strip()
            with RemoteFleet(daemon.config.socket_path) as fleet:
                assert f"{name}-1" in rows(fleet)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                wait_for(lambda: set(rows(fleet)) == {"bash-1"},
                         "the dead client's group gone", timeout=30)
        finally:
            proc.kill()


@pytest.mark.parametrize(("args", "error", "message"), [
    ({"tool": "/etc/passwd", "cwd": "/tmp"}, ProtocolError, "an adapter name"),
    ({"tool": "bash", "cwd": "relative"}, ProtocolError, "absolute path to a folder"),
    ({"tool": "bash", "cwd": "/tmp", "count": 0}, ProtocolError, "from 1 to 64"),
    ({"tool": "bash", "cwd": "/tmp", "env": {"1X": "y"}}, ProtocolError, "not a variable"),
    ({"tool": "bash", "cwd": "/tmp", "args": "-x"}, ProtocolError, "a list of at most"),
    ({"tool": "nope", "cwd": "/tmp"}, AdapterNotFound, "nope"),
])
def test_a_bad_group_request_is_refused_and_starts_nothing(daemon: Daemon, args: dict[str, Any],
                                                           error: type[Exception],
                                                           message: str) -> None:
    with RemoteFleet(daemon.config.socket_path) as fleet:
        with pytest.raises(error, match=message):
            list(fleet.client.stream("group", **args))
        assert set(rows(fleet)) == {"bash-1"}


def test_the_orchestrator_holds_its_lanes_in_the_daemons_fleet(daemon: Daemon,
                                                               tmp_path: Path) -> None:
    """Jobs that no instance of the cluster fits (another folder) run on instances the
    orchestrator holds in the daemon, not on ones of its own process."""
    jobs = [{"id": n, "tool": "bash", "cwd": str(tmp_path), "prompt": f"echo {n} > {n}.txt",
             "acceptance": [f"test -s {n}.txt"]} for n in ("a", "b")]
    with Orchestrator(state_dir=daemon.config.state_dir, record=False,
                      instances_per_tool=2) as orch, \
            RemoteFleet(daemon.config.socket_path) as fleet:
        results = orch.execute_jobs(jobs, mode="pooled")
        assert all(r.success for r in results), [r.error for r in results]
        held = {i for i, r in rows(fleet).items() if r["group"] != "bash"}
        assert {r.instance for r in results} <= held and len(held) == 2
        assert all(Path(rows(fleet)[i]["cwd"]) == tmp_path for i in held)
        orch.shutdown()
        assert set(rows(fleet)) == {"bash-1"}
