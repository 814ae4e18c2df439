"""What ``benchmarks/soak.py`` does to the daemon beside the prompt load: a stalled attach
watcher, the output flood, kill -9 of instances (and waiting for their restart), and kill -9 of
the daemon itself followed by ``cluster up`` again.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from _soak_cluster import (
    DEMO_ADAPTER,
    LIVE,
    Cluster,
    Ctl,
    RssSampler,
    alive,
    log,
    rnd,
    states,
    wait_ready,
)

# -- the stalled watcher and the flood ------------------------------------------------------------


class StalledWatcher:
    """A read-only ``attach`` stream whose client never reads: a raw socket that sends the
    request and then only sleeps. The daemon's hello and the first items sit unread in the
    socket buffer and everything after them backs up in the daemon."""

    def __init__(self, path: Path, instance: str) -> None:
        self.path = str(path)
        self.instance = instance
        self.sock: socket.socket | None = None
        self.opens: list[dict[str, Any]] = []
        self.closed_early: str | None = None

    def open(self, life: int) -> None:
        from aimterm.ipc.protocol import encode, request

        self.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(self.path)
            sock.sendall(encode(request(1, "attach", {"id": self.instance, "read_only": True})))
        except OSError as exc:
            sock.close()
            self.opens.append({"life": life, "error": repr(exc)})
            return
        self.sock = sock
        entry: dict[str, Any] = {"life": life, "at": time.monotonic()}
        self.opens.append(entry)
        # Check that the stream started without taking anything out of the buffer.
        deadline = time.monotonic() + 5
        confirmed = False
        while time.monotonic() < deadline and not confirmed:
            time.sleep(0.2)
            try:
                data = sock.recv(1 << 16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                break
            confirmed = b'"id":1,"item"' in data.replace(b" ", b"")
            if b'"ok":false' in data.replace(b" ", b""):
                entry["error"] = data[-500:].decode(errors="replace")
                break
        entry["confirmed"] = confirmed

    def close(self, reason: str | None = None) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            if reason is not None:
                self.closed_early = reason
            try:
                sock.close()
            except OSError:
                pass


class FloodRun(threading.Thread):
    """One ``flood SECONDS`` prompt to one flooding instance, on a connection of its own."""

    def __init__(self, path: Path, instance: str, seconds: float) -> None:
        super().__init__(name=f"flood-{instance}", daemon=True)
        self.path = str(path)
        self.instance = instance
        self.seconds = seconds
        self.result: dict[str, Any] = {"instance": instance}

    def run(self) -> None:
        from aimterm.errors import AimtermError
        from aimterm.ipc.client import ControlClient

        t0 = time.monotonic()
        self.result["start"] = t0
        try:
            with ControlClient(self.path, timeout=10) as client:
                turn = client.request("send", {"prompt": f"flood {self.seconds:g}",
                                               "to": self.instance,
                                               "timeout": self.seconds + 60},
                                      timeout=self.seconds + 90)
            reply = turn.get("reply") or ""
            m = re.search(r"flooded (\d+) bytes", reply)
            self.result.update(status=turn.get("status"), reply_chars=len(reply),
                               reply_lines_dropped=turn.get("reply_lines_dropped"),
                               bytes=int(m.group(1)) if m else None)
        except AimtermError as exc:
            self.result.update(status="error", code=exc.code, error=str(exc)[:300])
        except Exception as exc:  # noqa: BLE001 - reported
            self.result.update(status="error", code="exception", error=repr(exc)[:300])
        end = time.monotonic()
        self.result["end"] = end
        self.result["elapsed_s"] = rnd(end - t0, 2)
        if self.result.get("bytes"):
            self.result["mb_per_s"] = rnd(self.result["bytes"] / 1e6 / self.seconds, 2)



# -- kills ----------------------------------------------------------------------------------------


def kill_instances(ctl: Ctl, k: int, rng: random.Random) -> list[dict[str, Any]]:
    """kill -9 ``k`` demo instances (busy ones first), pids from ``status``."""
    rows = ctl.call("status")["instances"]
    demo = [r for r in rows if r.get("adapter") == DEMO_ADAPTER and r.get("pid")
            and r.get("state") in LIVE]
    busy = [r for r in demo if r["state"] == "busy"]
    rest = [r for r in demo if r["state"] != "busy"]
    rng.shuffle(busy)
    rng.shuffle(rest)
    kills = []
    for row in (busy + rest)[:k]:
        rec = {"id": row["id"], "pid": row["pid"], "state": row["state"],
               "restarts_before": row.get("restarts"), "at": time.monotonic()}
        try:
            os.kill(row["pid"], signal.SIGKILL)
        except OSError as exc:
            rec["error"] = repr(exc)
        kills.append(rec)
    return kills


def await_restarts(ctl: Ctl, kills: list[dict[str, Any]], timeout: float = 30.0) -> None:
    """Poll ``status`` until each killed instance runs again with a new pid (in place)."""
    deadline = time.monotonic() + timeout
    waiting = {rec["id"]: rec for rec in kills if "error" not in rec}
    while waiting and time.monotonic() < deadline:
        try:
            rows = {r["id"]: r for r in ctl.call("status", retry_s=5)["instances"]}
        except Exception:  # noqa: BLE001 - the daemon may be restarting; try again
            time.sleep(0.5)
            continue
        now = time.monotonic()
        for iid, rec in list(waiting.items()):
            row = rows.get(iid)
            if row is None:
                continue
            rec["last_state"] = row.get("state")
            if row.get("pid") and row["pid"] != rec["pid"] and row.get("state") in LIVE:
                rec["restarted_after_s"] = rnd(now - rec["at"], 2)
                rec["new_pid"] = row["pid"]
                del waiting[iid]
        time.sleep(0.25)
    for rec in waiting.values():
        rec["restarted_after_s"] = None



def daemon_kill(cluster: Cluster, ctl: Ctl, sampler: RssSampler, watcher: StalledWatcher,
                t0: float, marks: dict[str, float]) -> dict[str, Any]:
    """kill -9 the daemon, ``cluster up --detach`` again, wait for the fleet."""
    status = ctl.call("status")
    pid = status["daemon"]["pid"]
    out: dict[str, Any] = {"pid": pid, "rss_mb_before": None}
    try:
        import psutil

        out["rss_mb_before"] = rnd(psutil.Process(pid).memory_info().rss / 1e6, 1)
    except Exception:  # noqa: BLE001 - informative
        pass
    at = time.monotonic()
    marks["daemon_kill"] = at
    log(f"t={at - t0:.1f}s kill -9 the daemon (pid {pid})")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    ctl.drop()
    watcher.close()
    sampler.follow(None, 2)
    up = cluster.up()
    out["cluster_up"] = up
    if up["exit"] != 0:
        log(f"  cluster up after the kill failed: {up}")
        return out
    status = wait_ready(ctl, 120)
    ready = time.monotonic()
    marks["daemon_ready"] = ready
    new_pid = status["daemon"]["pid"]
    cluster.daemon_pids.append(new_pid)
    sampler.follow(new_pid, 2)
    recovered = dict(status["daemon"].get("recovered") or {})
    not_resumed = recovered.pop("not_resumed", None) or {}
    recovered["not_resumed_count"] = len(not_resumed)
    recovered["not_resumed_examples"] = dict(list(not_resumed.items())[:2])
    out.update(new_pid=new_pid, down_to_ready_s=rnd(ready - at, 2), states=states(status),
               recovered=recovered)
    log(f"  daemon {new_pid} ready {ready - at:.1f} s after the kill: {states(status)}; "
        f"recovered: " + ", ".join(f"{k} {v}" for k, v in recovered.items()
                                   if k != "not_resumed_examples"))
    watcher.open(2)
    return out

