"""The prompt clients of ``benchmarks/soak.py``: separate processes (``soak.py --client-child
CFG``), each with one control connection, sending prompts at a steady rate and recording
each one's outcome and reply time; and the parent's handle on them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _soak_cluster import DEMO_ADAPTER, REPLY_TIMEOUT_S, TURN_TIMEOUT_S

#: What each client process runs, with ``--client-child CFG``.
ENTRY = Path(__file__).resolve().parent / "soak.py"


def client_child(cfg_path: str) -> int:
    """One prompt client (a separate process): ``rate`` prompts a second to the demo tool from
    ``start_at`` to ``stop_at`` (monotonic; CLOCK_MONOTONIC is system-wide on Linux), each on
    its own request of one shared connection, not waiting for the previous one. After
    ``stop_at`` it waits for what is still open, then writes its records to ``out``."""
    with open(cfg_path, encoding="utf-8") as fh:
        cfg = json.load(fh)
    from aimterm.errors import AimtermError, ConnectionLost
    from aimterm.ipc.client import ControlClient

    parent = os.getppid()
    name = cfg["name"]
    interval = 1.0 / cfg["rate"]
    reply_timeout = cfg["reply_timeout"]
    lock = threading.Lock()
    records: list[dict[str, Any]] = []
    pending: dict[int, Any] = {}  # record index -> future
    not_sent: list[tuple[float, str]] = []
    broken = threading.Event()
    conn: dict[str, Any] = {"client": None, "connects": 0}

    def done(idx: int, fut: Any) -> None:
        now = time.monotonic()
        with lock:
            rec = records[idx]
            pending.pop(idx, None)
            if rec["outcome"] is not None or fut.cancelled():
                return  # given up on already (counted lost)
            rec["latency"] = now - rec["sent"]
            exc = fut.exception()
            if exc is None:
                res = fut.result() or {}
                rec["outcome"] = "answered"
                rec["status"] = res.get("status")
                rec["instance"] = res.get("instance")
                rec["match"] = f"Echo: {rec['prompt']}" in (res.get("reply") or "")
            else:
                rec["outcome"] = "failed"
                rec["code"] = getattr(exc, "code", None) or type(exc).__name__
                rec["error"] = str(exc).splitlines()[0][:200] if str(exc) else ""
        if isinstance(exc, ConnectionLost):
            broken.set()

    def sweep(now: float, reason: str, limit: float) -> None:
        """Declare lost what has had no answer for ``limit`` s."""
        with lock:
            late = [i for i in pending if now - records[i]["sent"] >= limit]
            futures = []
            for i in late:
                rec = records[i]
                rec["outcome"] = "lost"
                rec["code"] = reason
                futures.append(pending.pop(i))
        for fut in futures:
            fut.cancel()  # cancels the request on the server too

    def connect() -> Any:
        client = conn["client"]
        if client is not None and not broken.is_set():
            return client
        if client is not None:
            conn["client"] = None
            client.close()
        broken.clear()
        client = ControlClient(cfg["socket"], timeout=cfg["connect_timeout"])
        conn["client"] = client
        conn["connects"] += 1
        return client

    while time.monotonic() < cfg["start_at"]:
        time.sleep(0.05)
    next_t = cfg["start_at"]
    n = 0
    while True:
        now = time.monotonic()
        if now >= cfg["stop_at"]:
            break
        if os.getppid() != parent:
            return 3  # the benchmark is gone: so are we
        sweep(now, "no_reply", reply_timeout)
        if next_t > now:
            time.sleep(min(next_t - now, 0.25))
            continue
        next_t += interval
        if now - next_t > 2.0:
            next_t = now  # fell behind (reconnecting): keep the rate, do not burst
        try:
            client = connect()
        except AimtermError as exc:
            not_sent.append((now, exc.code))
            continue
        n += 1
        prompt = f"soak {name} n{n}"
        rec: dict[str, Any] = {"prompt": prompt, "sent": time.monotonic(), "outcome": None}
        with lock:
            idx = len(records)
            records.append(rec)
        try:
            fut = client.request_future("send", {"prompt": prompt, "tool": cfg["tool"],
                                                 "timeout": cfg["turn_timeout"]})
        except AimtermError as exc:
            # Not written to the socket: not sent.
            with lock:
                records.pop()
            not_sent.append((now, exc.code))
            broken.set()
            continue
        with lock:
            if rec["outcome"] is None:
                pending[idx] = fut
        fut.add_done_callback(lambda f, idx=idx: done(idx, f))
    # Wait (bounded) for the answers still due.
    stop = time.monotonic()
    while True:
        now = time.monotonic()
        sweep(now, "no_reply", reply_timeout)
        with lock:
            left = len(pending)
        if not left or now - stop > reply_timeout + 5:
            break
        if os.getppid() != parent:
            return 3
        time.sleep(0.1)
    sweep(float("inf"), "no_reply_by_end", 0.0)
    client = conn["client"]
    if client is not None:
        client.close()
    with lock:
        out = {"name": name, "connects": conn["connects"], "not_sent": not_sent,
               "records": [{k: v for k, v in r.items() if k != "prompt"} for r in records]}
    tmp = cfg["out"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(out, fh)
    os.replace(tmp, cfg["out"])
    return 0


class Clients:
    """``count`` client processes sharing ``rate``; each writes its records to
    ``<root>/client-<k>.json`` when it is done."""

    def __init__(self, root: Path, socket_path: Path, count: int, rate: float,
                 start_at: float, stop_at: float) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.outs: list[Path] = []
        per_client = rate / count
        for k in range(count):
            out = root / f"client-{k + 1}.json"
            cfg = {"name": f"c{k + 1}", "socket": str(socket_path), "rate": per_client,
                   "start_at": start_at, "stop_at": stop_at, "tool": DEMO_ADAPTER,
                   "turn_timeout": TURN_TIMEOUT_S, "reply_timeout": REPLY_TIMEOUT_S,
                   "connect_timeout": 2.0, "out": str(out)}
            cfg_path = root / f"client-{k + 1}.cfg.json"
            cfg_path.write_text(json.dumps(cfg))
            self.outs.append(out)
            self.procs.append(subprocess.Popen(
                [sys.executable, str(ENTRY), "--client-child", str(cfg_path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True))

    def join(self, timeout: float) -> list[int | None]:
        deadline = time.monotonic() + timeout
        codes: list[int | None] = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(max(deadline - time.monotonic(), 0.1)))
            except subprocess.TimeoutExpired:
                codes.append(None)
        return codes

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass

    def results(self) -> list[dict[str, Any]]:
        out = []
        for path in self.outs:
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                out.append({"name": path.stem, "error": f"no results: {exc!r}", "records": [],
                            "not_sent": [], "connects": 0})
        return out

