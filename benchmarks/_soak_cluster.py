"""The cluster under test in ``benchmarks/soak.py`` and the benchmark's handles on it: the
cluster file and state dir, ``cluster up``/``down``, its processes, a control connection that
survives a daemon restart, and the daemon's RSS sampler. Also what every soak module shares:
the names, the prompt bounds, ``log`` and ``rnd``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

FLOOD_TOOL = HERE / "soak_flood.py"
FLOOD_ADAPTER = "soakflood"
DEMO_ADAPTER = "demo"

#: Server-side bounds on every prompt: how long it may wait for a free instance, and how long
#: its turn may take once an instance has it. The client gives up (counts it lost) after
#: REPLY_TIMEOUT_S without any answer.
QUEUE_TIMEOUT_S = 30.0
TURN_TIMEOUT_S = 30.0
REPLY_TIMEOUT_S = 90.0

#: The states of an instance that runs (not starting, backing off, exited or fatal).
LIVE = {"idle", "busy", "waiting", "attached"}


def log(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


def rnd(x: float | None, nd: int = 3) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(x, nd)


def aimterm_argv() -> list[str]:
    # The interpreter running this script, so the CLI, the daemon and the benchmark all use
    # the same aimterm.
    return [sys.executable, "-m", "aimterm"]


# -- the cluster ---------------------------------------------------------------------------------


def flood_adapter_yaml() -> str:
    command = json.dumps([sys.executable, str(FLOOD_TOOL)])
    return f"""\
name: {FLOOD_ADAPTER}
description: benchmarks/soak_flood.py, a line tool that floods its terminal (soak benchmark)
command: {command}
terminal: {{rows: 30, cols: 120, scrollback: 200}}
detect: stream
states:
  - {{state: idle, region: 'bottom:1', any: ['^flood>$']}}
settle_ms: 0
submit: {{keys: [enter], verify: output}}
reply: {{from: stream, strip: [echo, prompt]}}
exit: {{keys: [exit, enter], timeout_s: 3}}
"""


class Cluster:
    """A cluster file, an adapter folder and a state dir under a short temporary root."""

    def __init__(self, instances: int, flood_instances: int, think: float,
                 flood_rate_mb: float) -> None:
        # A Unix socket path has at most 107 bytes: keep the directory short.
        self.root = Path(tempfile.mkdtemp(prefix="ats-", dir="/tmp"))
        self.adapters = self.root / "adapters"
        self.adapters.mkdir()
        (self.adapters / f"{FLOOD_ADAPTER}.yaml").write_text(flood_adapter_yaml())
        self.work = self.root / "work"
        self.home = self.root / "demo-home"
        self.work.mkdir()
        self.home.mkdir()
        # The demo agent's first-run dialog is answered by the adapter; trusting the folder up
        # front keeps 100 start-ups cheaper.
        (self.home / "state.json").write_text(json.dumps({"trusted": [str(self.work)],
                                                          "turns": 0}))
        self.state = self.root / "state"
        self.config = self.root / "cluster.yaml"
        total = instances + flood_instances
        self.config.write_text(f"""\
state_dir: state
routing: round_robin
queue_size: 1000
queue_timeout_s: {QUEUE_TIMEOUT_S:g}
log_max_mb: 8
max_instances: {max(256, total)}
restart: {{backoff_s: 0.5, backoff_max_s: 5, fast_failure_s: 2, max_fast_failures: 5}}
instances:
  - adapter: {DEMO_ADAPTER}
    count: {instances}
    cwd: {json.dumps(str(self.work))}
    env: {{AIMTERM_DEMO_HOME: {json.dumps(str(self.home))}, AIMTERM_DEMO_THINK: "{think:g}"}}
  - adapter: {FLOOD_ADAPTER}
    count: {flood_instances}
    env: {{FLOOD_RATE_MB: "{flood_rate_mb:g}"}}
""")
        self.env = dict(os.environ, AIMTERM_ADAPTER_PATH=str(self.adapters),
                        XDG_STATE_HOME=str(self.root / "xdg-state"),
                        XDG_CONFIG_HOME=str(self.root / "xdg-config"))
        self.daemon_pids: list[int] = []

    @property
    def socket(self) -> Path:
        return self.state / "control.sock"

    @property
    def log_path(self) -> Path:
        return self.state / "daemon.log"

    def run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*aimterm_argv(), *args, "-c", str(self.config),
                               "--state-dir", str(self.state)], capture_output=True, text=True,
                              env=self.env, timeout=timeout, stdin=subprocess.DEVNULL)

    def up(self, timeout: float = 180.0) -> dict[str, Any]:
        """``cluster up --detach``; returns its exit status, output and wall time."""
        t0 = time.monotonic()
        try:
            out = self.run("cluster", "up", "--detach", timeout=timeout)
            code, stdout, stderr = out.returncode, out.stdout, out.stderr
        except subprocess.TimeoutExpired:
            code, stdout, stderr = None, "", f"cluster up did not return within {timeout:g}s"
        return {"exit": code, "wall_s": rnd(time.monotonic() - t0, 2),
                "stdout": stdout.strip()[-300:], "stderr": stderr.strip()[-1000:]}

    def processes(self) -> list[int]:
        """Every live process of this cluster: what carries AIMTERM_CLUSTER=<state dir>, and
        the daemons this run started."""
        import psutil

        marks = {str(self.state), os.path.realpath(self.state)}
        found = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if (proc.status() != psutil.STATUS_ZOMBIE
                        and proc.environ().get("AIMTERM_CLUSTER") in marks):
                    found.append(proc.pid)
            except (psutil.Error, OSError):
                pass
            try:
                # A daemon of this state dir whose pid we never learnt (interrupted start-up).
                cmd = proc.cmdline()
                if (proc.pid not in found and "aimterm.daemon" in cmd
                        and any(m in cmd for m in marks)
                        and proc.status() != psutil.STATUS_ZOMBIE):
                    found.append(proc.pid)
            except (psutil.Error, OSError):
                pass
        for pid in self.daemon_pids:
            if pid not in found and alive(pid):
                found.append(pid)
        return found

    def kill_all(self) -> list[int]:
        killed = []
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
        return killed


def alive(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


class Ctl:
    """The benchmark's own control connection, made again after the daemon went away."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._client: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        from aimterm.ipc.client import ControlClient

        with self._lock:
            if self._client is None:
                self._client = ControlClient(self.path, timeout=10)
            return self._client

    def drop(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def call(self, op: str, *, timeout: float = 30.0, retry_s: float = 20.0,
             **args: Any) -> Any:
        """``op`` with ``args``; a lost or refused connection is retried for ``retry_s`` (use
        0 for an op that must not run twice)."""
        from aimterm.errors import ConnectionLost, DaemonNotRunning, IpcTimeout

        deadline = time.monotonic() + retry_s
        while True:
            try:
                return self._get().request(op, args, timeout=timeout)
            except (ConnectionLost, DaemonNotRunning, IpcTimeout):
                self.drop()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.25)



def wait_ready(ctl: Ctl, timeout: float) -> dict[str, Any]:
    """Wait until no instance is starting or backing off; the last status."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = ctl.call("status", retry_s=10)
        if status.get("ready") and all(r["state"] in LIVE for r in status["instances"]):
            break
        time.sleep(0.25)
    return status


def states(status: dict[str, Any]) -> dict[str, int]:
    return dict(Counter(r["state"] for r in status.get("instances", [])))



def shutdown(cluster: Cluster) -> dict[str, Any]:
    """``cluster down``, then what of the cluster is still alive (after a grace), then kill it."""
    out: dict[str, Any] = {}
    if cluster.socket.exists():
        t0 = time.monotonic()
        try:
            res = cluster.run("cluster", "down", timeout=120)
            out["down_exit"] = res.returncode
            if res.returncode != 0:
                out["down_stderr"] = res.stderr.strip()[-500:]
        except subprocess.TimeoutExpired:
            out["down_exit"] = None
            out["down_stderr"] = "cluster down did not return within 120 s"
        out["down_s"] = rnd(time.monotonic() - t0, 2)
    else:
        out["down_exit"] = "no socket"
    deadline = time.monotonic() + 10
    left = cluster.processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = cluster.processes()
    out["processes_left"] = len(left)
    if left:
        import psutil

        desc = []
        for pid in left[:10]:
            try:
                p = psutil.Process(pid)
                desc.append({"pid": pid, "cmd": " ".join(p.cmdline())[:200],
                             "status": p.status()})
            except psutil.Error:
                desc.append({"pid": pid})
        out["left"] = desc
    out["killed_after"] = len(cluster.kill_all())
    return out



# -- the daemon's memory and CPU ----------------------------------------------------------------


class RssSampler(threading.Thread):
    """Samples the daemon's RSS and CPU time every ``interval`` s, across daemon lives."""

    def __init__(self, interval: float = 0.5, abort_mb: float = 0.0,
                 on_abort: Callable[[float], None] | None = None) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.interval = interval
        self.abort_mb = abort_mb
        self.on_abort = on_abort
        self.pid: int | None = None
        self.life = 0
        self.samples: list[tuple[float, int, float, float]] = []  # (mono, life, rss MB, cpu s)
        self.stopping = threading.Event()
        self._proc: Any = None

    def follow(self, pid: int | None, life: int) -> None:
        self.pid, self.life, self._proc = pid, life, None

    def run(self) -> None:
        import psutil

        while not self.stopping.wait(self.interval):
            pid, life = self.pid, self.life
            if pid is None:
                continue
            try:
                if self._proc is None or self._proc.pid != pid:
                    self._proc = psutil.Process(pid)
                rss = self._proc.memory_info().rss / 1e6
                cpu = sum(self._proc.cpu_times()[:2])
            except psutil.Error:
                continue
            self.samples.append((time.monotonic(), life, rss, cpu))
            if self.abort_mb and rss > self.abort_mb and self.on_abort is not None:
                self.on_abort(rss)

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)

    def peak(self, life: int | None = None) -> float | None:
        values = [s[2] for s in self.samples if life is None or s[1] == life]
        return max(values) if values else None

    def cpu_pct(self, start: float, end: float) -> float | None:
        """The daemon's CPU in [start, end] as % of one core (one life only)."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2 or inside[0][1] != inside[-1][1]:
            return None
        dt = inside[-1][0] - inside[0][0]
        return 100.0 * (inside[-1][3] - inside[0][3]) / dt if dt > 0 else None

