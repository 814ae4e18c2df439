"""Faults at the socket: one request must never exhaust the daemon, and a malformed message
gets its one-line error code while the connection goes on. Against a real daemon in its own
process, over its real socket."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from tests.test_daemon import Cluster, cluster_processes, up


class Raw:
    """The control socket, spoken by hand: whatever bytes a hostile client would send."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")
        hello = json.loads(self.file.readline())
        assert "hello" in hello

    def send_line(self, line: str) -> dict[str, Any]:
        self.sock.sendall(line.encode("utf-8", "surrogatepass") + b"\n")
        reply: dict[str, Any] = json.loads(self.file.readline())
        return reply

    def call(self, rid: int, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.send_line(json.dumps({"v": 1, "id": rid, "op": op, "args": args or {}}))

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _no_traceback(c: Cluster) -> None:
    log = (c.state / "daemon.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def test_malformed_messages_get_their_code_and_the_connection_goes_on(cluster: Cluster) -> None:
    up(cluster)
    raw = Raw(cluster.socket)
    try:
        deep = '{"v":1,"id":7,"op":"ping","args":{"x":' + "[" * 200_000 + "]" * 200_000 + "}}"
        reply = raw.send_line(deep)
        assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
        assert "nest" in reply["error"]["message"]
        assert raw.call(1, "ping")["ok"] is True
        # A lone surrogate is valid JSON but not text: refused, not a crash in the store.
        reply = raw.send_line('{"v":1,"id":2,"op":"send","args":{"prompt":"hi \\ud800"}}')
        assert (reply["id"], reply["ok"], reply["error"]["code"]) == (2, False, "bad_request")
        assert "surrogate" in reply["error"]["message"]
        reply = raw.send_line('{"v":1,"id":3,"op":"send","args":{"\\udfff":1,"prompt":"x"}}')
        assert reply["error"]["code"] == "bad_request"
        assert raw.call(4, "ping")["ok"] is True
        # A well-formed prompt with real non-ASCII text still goes through.
        reply = raw.call(5, "send", {"prompt": "héllo 😀", "tool": "echo"})
        assert reply["ok"] is True and "héllo 😀" in reply["result"]["reply"]
    finally:
        raw.close()
    _no_traceback(cluster)


def test_scale_is_bounded_by_the_cluster_and_takes_names_not_paths(cluster: Cluster) -> None:
    cluster.config.write_text(cluster.config.read_text().replace(
        "instances:", "max_instances: 3\ninstances:"))
    up(cluster)
    before = sorted(cluster_processes(cluster.state))
    raw = Raw(cluster.socket)
    try:
        reply = raw.call(1, "scale", {"tool": "echo", "count": 100_000_000})
        assert reply["error"]["code"] == "bad_request"
        reply = raw.call(2, "scale", {"tool": "echo", "count": 4})
        assert reply["error"]["code"] == "limit_exceeded"
        assert (reply["error"]["requested"], reply["error"]["maximum"]) == (4, 3)
        # A new group counts against the same ceiling.
        reply = raw.call(3, "scale", {"tool": "stubborn", "count": 2})
        assert reply["error"]["code"] == "limit_exceeded"
        # A path is not an adapter name: the daemon does not go and parse it.
        reply = raw.call(4, "scale", {"tool": "/etc/passwd", "count": 1})
        assert reply["error"]["code"] == "bad_request" and "not a path" in \
            reply["error"]["message"]
        assert raw.call(5, "ping")["ok"] is True
    finally:
        raw.close()
    assert sorted(cluster_processes(cluster.state)) == before  # nothing was started
    assert [r["id"] for r in cluster.status()["instances"]] == ["echo-1", "echo-2"]
    # The CLI says it in one line, with the error's exit status.
    out = cluster.run("cluster", "scale", "echo", "5", "-c", str(cluster.config))
    assert out.returncode == 17
    assert out.stderr.strip().splitlines() == [
        "aimterm: instances in the cluster: 5 requested, at most 3 allowed "
        "(raise max_instances in the cluster file)"]
    # Within the ceiling, scaling still works.
    cluster.cli("cluster", "scale", "echo", "3")
    assert len(cluster.status()["instances"]) == 3
    _no_traceback(cluster)


def test_a_cluster_file_past_its_ceiling_names_the_file_and_key(tmp_path: Path) -> None:
    import pytest

    from aimterm.config import MAX_INSTANCES, load_cluster_config
    from aimterm.errors import ConfigError

    path = tmp_path / "cluster.yaml"
    path.write_text("instances:\n  - adapter: demo\n    count: 200\n"
                    "  - adapter: echo\n    count: 100\n")
    with pytest.raises(ConfigError) as info:
        load_cluster_config(path)
    assert str(info.value).startswith(f"{path}:")
    assert f"300 instances in all, more than max_instances ({MAX_INSTANCES})" in str(info.value)
    path.write_text("max_instances: 1000000\ninstances: []\n")
    with pytest.raises(ConfigError, match="max_instances: expected an integer <= 10000"):
        load_cluster_config(path)
    path.write_text("max_instances: 300\ninstances:\n  - adapter: demo\n    count: 200\n"
                    "  - adapter: echo\n    count: 100\n")
    assert load_cluster_config(path).max_instances == 300
