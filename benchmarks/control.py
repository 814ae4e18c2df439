#!/usr/bin/env python3
"""Control-plane benchmarks for aimterm: a ``send`` through the daemon's socket against the
same turn in-process, the wall time of ``aimterm cluster status`` as a new process, and
keystroke-to-echo latency through ``aimterm attach`` against a bare PTY.

Run from the repository root::

    python benchmarks/control.py [--quick]

Prints one JSON document to stdout; progress goes to stderr. See benchmarks/README.md for
what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from turn import ECHO_REPL, machine, percentile, summary_ms  # noqa: E402
from turn import section as run_section  # noqa: E402

AIMS = {
    "socket_added_p50_ms": 2.0,
    "status_median_ms": 200.0,
    "attach_added_p95_ms": 5.0,
}

WARMUP_TURNS = 30
WARMUP_KEYS = 10
KEYS_PER_LINE = 20
PROMPT = b"ready> "
ALPHABET = "abcdefghijklmnopqrstuvwxyz"

ECHO_ADAPTER = f"""\
command: {json.dumps([sys.executable, str(ECHO_REPL)])}
detect: stream
states:
  - {{state: idle, region: bottom:1, any: ['^ready>$']}}
settle_ms: 0
submit: {{keys: [enter], verify: output}}
reply: {{from: stream, strip: [echo, prompt]}}
exit: {{keys: [exit, enter], timeout_s: 3}}
"""

CLUSTER_CONFIG = """\
state_dir: state
restart: {backoff_s: 0.1, fast_failure_s: 1}
instances:
  - adapter: echo
    count: 2
    env: {FAKE_THINK: "0"}
"""


def log(message: str) -> None:
    print(f"[control-bench] {message}", file=sys.stderr, flush=True)


def aimterm_argv() -> list[str]:
    """The installed ``aimterm`` script when there is one (what a user runs), else ``-m``."""
    exe = shutil.which("aimterm")
    return [exe] if exe else [sys.executable, "-m", "aimterm"]


# -- the daemon ---------------------------------------------------------------------------------


class Daemon:
    """A cluster of two zero-think echo instances on its own short state dir."""

    def __init__(self) -> None:
        # A Unix socket path has at most 107 bytes: keep the directory short.
        self.root = Path(tempfile.mkdtemp(prefix="atc-", dir="/tmp"))
        self.adapters = self.root / "adapters"
        self.adapters.mkdir()
        (self.adapters / "echo.yaml").write_text(ECHO_ADAPTER)
        self.config = self.root / "cluster.yaml"
        self.config.write_text(CLUSTER_CONFIG)
        self.state = self.root / "state"
        self.env = dict(os.environ, AIMTERM_ADAPTER_PATH=str(self.adapters),
                        XDG_STATE_HOME=str(self.root / "xdg-state"),
                        XDG_CONFIG_HOME=str(self.root / "xdg-config"))
        self.daemon_pid: int | None = None

    @property
    def socket(self) -> Path:
        return self.state / "control.sock"

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*aimterm_argv(), *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout)

    def up(self) -> dict[str, Any]:
        out = self.run("cluster", "up", "--detach", "-c", str(self.config),
                       "--state-dir", str(self.state))
        if out.returncode != 0:
            raise RuntimeError(f"cluster up failed ({out.returncode}): {out.stderr[-2000:]}")
        from aimterm.ipc.client import ControlClient

        deadline = time.monotonic() + 20
        while True:
            with ControlClient(str(self.socket), timeout=10) as client:
                status = client.call("status")
            self.daemon_pid = status["daemon"]["pid"]
            if status.get("ready") and all(r["state"] == "idle" for r in status["instances"]):
                return {}
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not become ready: {status}")
            time.sleep(0.05)

    def leftovers(self) -> list[int]:
        import psutil

        found = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if (proc.status() != psutil.STATUS_ZOMBIE
                        and proc.environ().get("AIMTERM_CLUSTER") == str(self.state)):
                    found.append(proc.pid)
            except (psutil.Error, OSError):
                pass
        if self.daemon_pid is not None:
            try:
                p = psutil.Process(self.daemon_pid)
                if p.status() != psutil.STATUS_ZOMBIE and self.daemon_pid not in found:
                    found.append(self.daemon_pid)
            except psutil.Error:
                pass
        return found

    def down(self) -> list[int]:
        """Stop the daemon; kill (by pid) whatever of this cluster is still alive. Returns
        the pids that had to be killed."""
        if self.socket.exists():
            out = self.run("cluster", "down", "-c", str(self.config),
                           "--state-dir", str(self.state), timeout=60)
            if out.returncode != 0:
                log(f"cluster down failed ({out.returncode}): {out.stderr.strip()[-500:]}")
        # The daemon exits right after removing its socket: give it (and its instances) a
        # moment to go before killing what is left.
        deadline = time.monotonic() + 10.0
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.05)
        killed = []
        for pid in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
        return killed


# -- 1. send through the socket vs in-process ---------------------------------------------------


def bench_send(d: Daemon, turns: int, blocks: int) -> dict[str, Any]:
    from aimterm.adapter.loader import load_text
    from aimterm.ipc.client import ControlClient
    from aimterm.pool import GroupSpec, Pool

    log(f"send: {WARMUP_TURNS} warm-up + {turns} timed turns per side, {blocks} blocks")
    spec = load_text(ECHO_ADAPTER, "echo.yaml")
    pool = Pool([GroupSpec(adapter=spec, count=2, env={"FAKE_THINK": "0"})])
    client: ControlClient | None = None
    samples: dict[str, list[float]] = {"socket": [], "in_process": []}
    mismatches: dict[str, list[dict[str, Any]]] = {"socket": [], "in_process": []}
    counter = [0]
    try:
        pool.start(wait=True, timeout=30)
        pool_ids = sorted(r["id"] for r in pool.status())
        pool_target = pool_ids[0]
        client = ControlClient(str(d.socket), timeout=30)
        clock = time.perf_counter

        def run_socket(n: int, out: list[float] | None) -> None:
            assert client is not None
            call = client.call
            for _ in range(n):
                i = counter[0]
                counter[0] += 1
                prompt = f"ping {i}"
                t0 = clock()
                result = call("send", prompt=prompt, to="echo-1")
                dt = clock() - t0
                if out is not None:
                    out.append(dt)
                reply = result.get("reply") if isinstance(result, dict) else result
                if reply != f"echo: {prompt}":
                    mismatches["socket"].append({"turn": i, "result": repr(result)[:200]})

        def run_pool(n: int, out: list[float] | None) -> None:
            send = pool.send
            for _ in range(n):
                i = counter[0]
                counter[0] += 1
                prompt = f"ping {i}"
                t0 = clock()
                turn = send(prompt, to=pool_target)
                dt = clock() - t0
                if out is not None:
                    out.append(dt)
                if turn.reply != f"echo: {prompt}" or turn.status.value != "done":
                    mismatches["in_process"].append({"turn": i, "status": turn.status.value,
                                                     "reply": turn.reply[:200]})

        run_socket(WARMUP_TURNS, None)
        run_pool(WARMUP_TURNS, None)
        sides = {"socket": run_socket, "in_process": run_pool}
        per_block = [turns // blocks + (1 if b < turns % blocks else 0) for b in range(blocks)]
        for b, n in enumerate(per_block):
            order = ("socket", "in_process") if b % 2 == 0 else ("in_process", "socket")
            for name in order:
                sides[name](n, samples[name])
            log(f"  block {b + 1}/{blocks}: socket p50 "
                f"{percentile(sorted(samples['socket'][-n:]), 50) * 1000:.3f} ms, in-process p50 "
                f"{percentile(sorted(samples['in_process'][-n:]), 50) * 1000:.3f} ms")
    finally:
        if client is not None:
            client.close()
        pool.shutdown()
    s = summary_ms(samples["socket"])
    p = summary_ms(samples["in_process"])
    return {
        "instances": 2,
        "target": {"socket": "echo-1", "in_process": pool_target},
        "turns": turns,
        "warmup_turns": WARMUP_TURNS,
        "blocks": blocks,
        "socket": s,
        "in_process": p,
        "added_p50_ms": round(s["p50_ms"] - p["p50_ms"], 4),
        "added_p95_ms": round(s["p95_ms"] - p["p95_ms"], 4),
        "mismatches": {k: len(v) for k, v in mismatches.items()},
        "mismatch_examples": {k: v[:3] for k, v in mismatches.items() if v},
    }


# -- 2. `aimterm cluster status` as a new process -----------------------------------------------


def bench_status(d: Daemon, runs: int) -> dict[str, Any]:
    argv = [*aimterm_argv(), "cluster", "status", "--state-dir", str(d.state)]
    log(f"status: {runs} timed runs of `aimterm cluster status` as a new process")
    times: list[float] = []
    failures: list[str] = []
    subprocess.run(argv, capture_output=True, env=d.env, timeout=60)  # untimed: warm the caches
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, env=d.env, timeout=60)
        dt = time.perf_counter() - t0
        times.append(dt)
        if out.returncode != 0 or "echo-1" not in out.stdout:
            failures.append(f"exit {out.returncode}: {out.stderr.strip()[-300:]}")
    values = sorted(t * 1000 for t in times)
    return {
        "command": "aimterm cluster status --state-dir DIR",
        "via": "script" if len(aimterm_argv()) == 1 else "python -m aimterm",
        "runs": runs,
        "median_ms": round(statistics.median(values), 2),
        "p95_ms": round(percentile(values, 95), 2),
        "min_ms": round(values[0], 2),
        "max_ms": round(values[-1], 2),
        "failures": failures,
    }


# -- 3. keystroke-to-echo through attach vs a bare PTY --------------------------------------------


def type_keys(child: Any, keys: int, out: list[float] | None) -> None:
    """Type ``keys`` characters, one at a time, timing each until its echo is read. Every
    ``KEYS_PER_LINE`` characters, Enter ends the line (untimed) and the prompt is awaited."""
    clock = time.perf_counter
    typed = 0
    while typed < keys:
        for j in range(min(KEYS_PER_LINE, keys - typed)):
            ch = ALPHABET[(typed + j) % len(ALPHABET)].encode()
            t0 = clock()
            child.send(ch)
            child.expect_exact(ch)
            dt = clock() - t0
            if out is not None:
                out.append(dt)
        typed += min(KEYS_PER_LINE, keys - typed)
        child.send(b"\r")
        child.expect_exact(PROMPT)


def spawn(argv: list[str], env: dict[str, str] | None = None) -> Any:
    import pexpect

    child = pexpect.spawn(argv[0], argv[1:], env=env, encoding=None, timeout=10,
                          dimensions=(24, 80))
    child.delaybeforesend = None
    child.delayafterread = None
    return child


def bench_keys(d: Daemon, keys: int, blocks: int) -> dict[str, Any]:
    import pexpect

    log(f"keystrokes: {WARMUP_KEYS} warm-up + {keys} timed keystrokes per side, {blocks} blocks")
    attach_argv = [*aimterm_argv(), "attach", "echo-1", "-c", str(d.config),
                   "--state-dir", str(d.state)]
    samples: dict[str, list[float]] = {"attach": [], "bare": []}
    attach = bare = None
    detached_cleanly = None
    try:
        attach = spawn(attach_argv, env=d.env)
        attach.expect_exact(PROMPT)  # the screen is redrawn first
        bare = spawn([sys.executable, str(ECHO_REPL)], env=dict(os.environ, FAKE_THINK="0"))
        bare.expect_exact(PROMPT)
        # The instance may still be handing over to the writer; wait until typing echoes.
        type_keys(attach, WARMUP_KEYS, None)
        type_keys(bare, WARMUP_KEYS, None)
        sides = {"attach": attach, "bare": bare}
        per_block = [keys // blocks + (1 if b < keys % blocks else 0) for b in range(blocks)]
        for b, n in enumerate(per_block):
            order = ("attach", "bare") if b % 2 == 0 else ("bare", "attach")
            for name in order:
                type_keys(sides[name], n, samples[name])
            log(f"  block {b + 1}/{blocks}: attach p50 "
                f"{percentile(sorted(samples['attach'][-n:]), 50) * 1000:.3f} ms, bare p50 "
                f"{percentile(sorted(samples['bare'][-n:]), 50) * 1000:.3f} ms")
        attach.sendcontrol("]")  # detach: the instance goes back to automation
        attach.expect(pexpect.EOF)
        attach.close()
        detached_cleanly = attach.exitstatus == 0
    finally:
        for child in (attach, bare):
            if child is not None and child.isalive():
                child.terminate(force=True)
            if child is not None:
                child.close(force=True)
    att = summary_ms(samples["attach"])
    bar = summary_ms(samples["bare"])
    return {
        "program": "tests/fakes/echo_repl.py (cooked mode: the tty echoes each key)",
        "attach_command": "aimterm attach echo-1 -c CONFIG --state-dir DIR",
        "keystrokes": keys,
        "warmup_keystrokes": WARMUP_KEYS,
        "keys_per_line": KEYS_PER_LINE,
        "blocks": blocks,
        "attach": att,
        "bare": bar,
        "added_p50_ms": round(att["p50_ms"] - bar["p50_ms"], 4),
        "added_p95_ms": round(att["p95_ms"] - bar["p95_ms"], 4),
        "detached_cleanly": detached_cleanly,
    }


# -- main ---------------------------------------------------------------------------------------


def section(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return run_section(name, fn, log)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--turns", type=int, default=None,
                   help="timed send turns per side (default 300, --quick 100)")
    p.add_argument("--status-runs", type=int, default=10, help="timed `cluster status` runs")
    p.add_argument("--keys", type=int, default=None,
                   help="timed keystrokes per side (default 200, --quick 100)")
    p.add_argument("--blocks", type=int, default=5, help="alternating blocks per side")
    p.add_argument("--quick", action="store_true", help="fewer turns, for a fast check")
    args = p.parse_args(argv)
    turns = args.turns if args.turns is not None else (100 if args.quick else 300)
    keys = args.keys if args.keys is not None else (100 if args.quick else 200)
    if turns < 1 or keys < 1 or args.status_runs < 1 or args.blocks < 1:
        p.error("counts must be positive")
    started = time.perf_counter()

    d = Daemon()
    killed: list[int] = []
    send: dict[str, Any]
    status: dict[str, Any]
    keystrokes: dict[str, Any]
    try:
        up = section("cluster up", lambda: d.up() or {})
        if "error" in up:
            send = {"error": f"cluster up: {up['error']}"}
            status = keystrokes = send
        else:
            send = section("send", lambda: bench_send(d, turns, min(args.blocks, turns)))
            status = section("status", lambda: bench_status(d, args.status_runs))
            keystrokes = section("keystrokes",
                                 lambda: bench_keys(d, keys, min(args.blocks, keys)))
    finally:
        killed = d.down()
        if killed:
            log(f"killed leftover processes: {killed}")

    met = {
        "socket_added_p50": (send.get("added_p50_ms") is not None
                             and send["added_p50_ms"] <= AIMS["socket_added_p50_ms"]
                             and not any(send.get("mismatches", {}).values())),
        "status_median": (status.get("median_ms") is not None
                          and status["median_ms"] <= AIMS["status_median_ms"]
                          and not status.get("failures")),
        "attach_added_p95": (keystrokes.get("added_p95_ms") is not None
                             and keystrokes["added_p95_ms"] <= AIMS["attach_added_p95_ms"]),
    }
    doc = {
        "benchmark": "control",
        "quick": args.quick,
        "machine": machine(),
        "send": send,
        "status": status,
        "keystrokes": keystrokes,
        "aims": {
            "socket_added_p50_ms": f"<= {AIMS['socket_added_p50_ms']}",
            "status_median_ms": f"<= {AIMS['status_median_ms']}",
            "attach_added_p95_ms": f"<= {AIMS['attach_added_p95_ms']}",
        },
        "met": met,
        "leftover_processes_killed": len(killed),
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    print(json.dumps(doc, indent=2))
    log(f"done in {doc['elapsed_s']} s; met: {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
