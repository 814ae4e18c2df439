"""Slow and greedy clients cost the daemon bounded memory: a watcher that never reads, many
connections each holding a half-sent line, a client that sends without reading its replies.
Against a real daemon in its own process, with a real tool flooding its terminal."""

from __future__ import annotations

import base64
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from aimterm.ipc.client import ControlClient
from tests.faults.test_limits import Raw, _no_traceback
from tests.helpers import FAKES
from tests.test_daemon import Cluster, up

FLOOD = """
command: ["{py}", "{fakes}/flood_cli.py"]
detect: stream
states: [{state: idle, region: bottom:1, any: ['^flood>$']}]
settle_ms: 0
submit: {keys: [enter], verify: output}
reply: {from: stream, strip: [echo, prompt]}
exit: {keys: [exit, enter], timeout_s: 3}
"""


def _with_flood(c: Cluster) -> str:
    (c.root / "adapters" / "flood.yaml").write_text(
        FLOOD.replace("{fakes}", str(FAKES)).replace("{py}", sys.executable))
    c.config.write_text(c.config.read_text() + "  - adapter: flood\n    count: 1\n")
    status = up(c)
    return next(r["id"] for r in status["instances"] if r["adapter"] == "flood")


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


class _Peak(threading.Thread):
    """The peak RSS of a process, sampled until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = _rss(pid)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.05):
            self.peak = max(self.peak, _rss(self.pid))

    def stop(self) -> int:
        self.halt.set()
        self.join(5)
        return self.peak


def _flood(c: Cluster, mib: int) -> dict[str, Any]:
    with ControlClient(c.socket, timeout=300) as client:
        turn: dict[str, Any] = client.call("send", prompt=f"flood {mib}", tool="flood",
                                           timeout=280)
    return turn


def test_a_watcher_that_never_reads_costs_bounded_memory_and_gets_a_redraw(
        cluster: Cluster) -> None:
    iid = _with_flood(cluster)
    daemon = cluster.status()["daemon"]["pid"]
    watcher = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    watcher.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    watcher.settimeout(30)
    watcher.connect(str(cluster.socket))
    reader = watcher.makefile("rb")
    try:
        assert "hello" in json.loads(reader.readline())
        watcher.sendall(json.dumps({"v": 1, "id": 1, "op": "attach",
                                    "args": {"id": iid, "read_only": True}}).encode() + b"\n")
        base = _rss(daemon)
        peak = _Peak(daemon)
        peak.start()
        turn = _flood(cluster, 120)  # the watcher reads nothing meanwhile
        grown = (peak.stop() - base) / 2**20
        assert turn["ok"] if "ok" in turn else turn["status"] == "done", turn
        # 120 MiB of output (160 MiB in base64) went past a watcher that took none of it.
        assert grown < 60, f"the daemon grew by {grown:.0f} MiB"
        # Once it reads again it gets the screen redrawn, then the output as it comes.
        with ControlClient(cluster.socket, timeout=30) as client:
            client.call("send", prompt="after the flood", tool="flood", timeout=30)
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            item = json.loads(reader.readline())["item"]
            seen.append(item)
            if b"echo: after the flood" in base64.b64decode(item.get("output", "")):
                break
        redraws = [i for i in seen if i.get("redraw")]
        assert redraws and redraws[0]["dropped"] > 50 * 2**20, [list(i) for i in seen][:5]
        assert b"flooded 120" in base64.b64decode(redraws[-1]["output"]) or any(
            b"flooded 120" in base64.b64decode(i.get("output", "")) for i in seen)
    finally:
        reader.close()
        watcher.close()
    with ControlClient(cluster.socket, timeout=10) as client:
        assert client.call("ping")
    _no_traceback(cluster)


def test_half_sent_lines_of_many_clients_are_bounded_together(cluster: Cluster) -> None:
    up(cluster)
    daemon = cluster.status()["daemon"]["pid"]
    base = _rss(daemon)
    conns: list[socket.socket] = []
    refused = 0
    try:
        for _ in range(20):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(30)
            s.connect(str(cluster.socket))
            s.makefile("rb").readline()  # hello
            chunk = b'{"v":1,"id":1,"op":"ping","args":{"x":"' + b"x" * (1 << 20)
            try:
                s.sendall(chunk)
                for _ in range(14):
                    s.sendall(b"x" * (1 << 20))
            except (BrokenPipeError, ConnectionResetError):
                pass
            conns.append(s)
        time.sleep(0.5)
        for s in conns:
            s.settimeout(0.5)
            try:
                data = s.recv(65536)
            except TimeoutError:
                continue
            if data:
                reply = json.loads(data.splitlines()[0])
                assert reply["error"]["code"] == "limit_exceeded", reply
                refused += 1
        grown = (_rss(daemon) - base) / 2**20
        assert refused >= 10, refused  # 48 MiB hold three of the 15 MiB lines, not twenty
        assert grown < 100, f"the daemon grew by {grown:.0f} MiB"
        with ControlClient(cluster.socket, timeout=10) as client:
            assert client.call("ping")
    finally:
        for s in conns:
            s.close()
    _no_traceback(cluster)


def test_a_client_that_never_reads_its_replies_only_blocks_itself(cluster: Cluster) -> None:
    up(cluster)
    daemon = cluster.status()["daemon"]["pid"]
    base = _rss(daemon)
    greedy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    greedy.connect(str(cluster.socket))
    greedy.settimeout(5)
    sent = 0
    line = b'{"v":1,"id":1,"op":"status"}\n{"v":1,"op":"nope"}\n'
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sent < 400_000:
            try:
                greedy.sendall(line * 100)
            except TimeoutError:
                break  # the daemon stopped reading it: back-pressure
            sent += 200
        assert sent < 400_000, "the daemon kept reading a client that takes no replies"
        grown = (_rss(daemon) - base) / 2**20
        assert grown < 60, f"the daemon grew by {grown:.0f} MiB"
        with ControlClient(cluster.socket, timeout=10) as client:
            assert client.call("ping")
    finally:
        greedy.close()
    raw = Raw(Path(cluster.socket))
    assert raw.call(1, "ping")["ok"] is True
    raw.close()
    _no_traceback(cluster)
