"""``aimterm attach`` end to end: a real daemon, real instances, the CLI in a real PTY.

A writer types into an instance, its window size follows the local one, and Ctrl-] gives the
instance back to automation; read-only watchers see the output and send nothing.
"""

from __future__ import annotations

import base64
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pexpect
import pytest

from aimterm.errors import NotReady
from aimterm.ipc.client import ControlClient
from tests.helpers import wait_for
from tests.test_daemon import Cluster, cluster, up  # noqa: F401  (the fixture)

SHELL = """
command: ["{bash}", "--norc", "--noprofile", "-i"]
detect: stream
states: [{state: idle, region: bottom:1, any: ['^sh[$] ?$']}]
settle_ms: 0
submit: {keys: [enter], verify: output}
reply: {from: stream, strip: [echo, prompt]}
exit: {keys: [exit, enter], timeout_s: 3}
"""

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture
def shell_cluster(cluster: Cluster) -> Iterator[Cluster]:  # noqa: F811
    bash = shutil.which("bash")
    assert bash is not None
    (cluster.root / "adapters" / "shell.yaml").write_text(SHELL.replace("{bash}", bash))
    cluster.config.write_text("""\
state_dir: state
restart: {backoff_s: 0.1, fast_failure_s: 1}
instances:
  - adapter: echo
    count: 2
  - adapter: shell
    count: 1
    env: {PS1: "sh$ ", TERM: dumb}
""")
    yield cluster


def attach(c: Cluster, *args: str, rows: int = 24, cols: int = 80) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, ["-m", "aimterm", "attach", *args, "-c", str(c.config)],
                         env=c.env, dimensions=(rows, cols), timeout=10, encoding="utf-8")


def states(c: Cluster) -> dict[str, str]:
    return {r["id"]: r["state"] for r in c.status()["instances"]}


def finish(child: pexpect.spawn) -> None:
    if child.isalive():
        child.terminate(force=True)
    child.close()


def test_type_resize_detach_and_automation_resumes(shell_cluster: Cluster) -> None:
    c = shell_cluster
    up(c)
    child = attach(c, "echo-1")
    try:
        child.expect("ready>")  # the screen is redrawn first
        wait_for(lambda: states(c)["echo-1"] == "attached", "echo-1 to be attached")
        child.send("hello there\r")
        child.expect("echo: hello there")
        child.sendcontrol("]")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        finish(child)
    # Given back at once: idle, and automation uses it again.
    assert states(c)["echo-1"] == "idle"
    assert c.cli("send", "--to", "echo-1", "back").stdout == "echo: back\n"

    shell = attach(c, "shell-1", rows=30, cols=100)
    try:
        shell.expect(r"sh\$")
        shell.send("stty size\r")
        shell.expect(r"\r30 100\r\n")
        shell.setwinsize(40, 120)  # SIGWINCH to the attach command, passed on
        wait_for(lambda: (shell.send("stty size\r"),
                          shell.expect([r"\r40 120\r\n", r"\r30 100\r\n"]) == 0)[1],
                 "the instance's PTY to follow the window")
        shell.sendcontrol("]")
        shell.expect(pexpect.EOF)
        shell.close()
        assert shell.exitstatus == 0
    finally:
        finish(shell)
    wait_for(lambda: states(c)["shell-1"] == "idle", "shell-1 to be idle again")
    c.cli("cluster", "down")


def test_read_only_watchers_and_one_writer(shell_cluster: Cluster) -> None:
    c = shell_cluster
    up(c)
    watchers = [attach(c, "echo-2", "--read-only") for _ in range(2)]
    try:
        for w in watchers:
            w.expect("ready>")
        assert states(c)["echo-2"] == "idle"  # watching does not take it from automation
        assert c.cli("send", "--to", "echo-2", "watched").stdout == "echo: watched\n"
        for w in watchers:
            w.expect("echo: watched")
        watchers[0].send("typed by a watcher\r")
        assert c.cli("send", "--to", "echo-2", "after").stdout == "echo: after\n"
        for w in watchers:
            w.expect("echo: after")
            assert "typed by a watcher" not in str(w.before)

        with ControlClient(str(c.socket), timeout=10) as client:
            writer = client.open_stream("attach", {"id": "echo-2"})
            items = iter(writer)
            first: dict[str, Any] = next(items)
            assert first["state"] == "attached" and "ready>" in \
                base64.b64decode(first["screen"]).decode()
            # A second writer is refused while one holds the instance; watchers are not.
            with pytest.raises(NotReady, match="another client is attached"):
                next(iter(client.open_stream("attach", {"id": "echo-2"})))
            watcher = client.open_stream("attach", {"id": "echo-2", "read_only": True})
            witems = iter(watcher)
            assert next(witems)["state"] == "attached"
            watcher.send_input({"data": base64.b64encode(b"nope\r").decode()})
            assert next(witems)["error"]["code"] == "read_only"
            writer.send_input({"data": base64.b64encode(b"via socket\r").decode()})
            seen = b""
            while b"echo: via socket" not in seen:
                seen += base64.b64decode(next(witems)["output"])
            watcher.close()
            writer.send_input({"detach": True})
            # The stream ends once the instance is given back (its output came first).
            assert all("output" in item for item in items)
        assert states(c)["echo-2"] == "idle"
        with ControlClient(str(c.socket), timeout=10) as client:
            with pytest.raises(Exception, match="unknown|no instance|echo-9"):
                next(iter(client.open_stream("attach", {"id": "echo-9"})))
    finally:
        for w in watchers:
            finish(w)
    c.cli("cluster", "down")
