#!/usr/bin/env python3
"""Fleet benchmarks for aimterm: spawn-to-ready, turns per second, parallel speedup, idle CPU
and controller memory, each against raw pexpect and tmux polling measured in the same run on
the same programs.

Run from the repository root::

    python benchmarks/fleet.py [--quick]

Prints one JSON document to stdout; progress goes to stderr. See benchmarks/README.md and
docs/PERFORMANCE.md for what each figure means.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _peers import (  # noqa: E402
    DEMO_COMMAND,
    DEMO_READY,
    Poller,
    Tmux,
    close_pexpect,
    pexpect_demo_ready,
    pexpect_spawn,
)
from turn import ECHO_REPL, echo_adapter_yaml, machine, profile_rows, rss_mb  # noqa: E402
from turn import section as run_section  # noqa: E402

ECHO_COMMAND = [sys.executable, str(ECHO_REPL)]
ECHO_PROMPT = "ready> "
ADAPTER_NAME = "echo-bench"

AIMS = {
    "spawn_5_s": 0.5,
    "spawn_100_s": 5.0,
    "throughput_vs_pexpect": 0.5,  # aimterm turns/s >= this x pexpect's
    "throughput_vs_tmux_10ms": 10.0,  # aimterm turns/s >= this x tmux polling at 10 ms
    "speedup_per_instance": 0.95,  # speedup >= this x N
    "idle_cpu_pct": 2.0,  # % of one core, controller process
    "rss_5_mb": 60.0,
    "rss_100_mb": 250.0,
}

_TMUX_SERVERS: list[Tmux] = []


def log(message: str) -> None:
    print(f"[fleet-bench] {message}", file=sys.stderr, flush=True)


def rnd(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


class Fixture:
    """A scratch directory with a demo-agent home whose state.json already trusts the working
    directory, so no first-run dialog appears (for any side)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.work = os.path.realpath(os.path.join(root, "work"))
        self.home = os.path.join(root, "home")
        os.makedirs(self.work, exist_ok=True)
        os.makedirs(self.home, exist_ok=True)
        with open(os.path.join(self.home, "state.json"), "w", encoding="utf-8") as fh:
            json.dump({"trusted": [self.work], "turns": 0}, fh)

    def demo_env(self, think: float = 0.05) -> dict[str, str]:
        return {"AIMTERM_DEMO_HOME": self.home, "AIMTERM_DEMO_THINK": str(think)}


def new_tmux() -> Tmux:
    tmux = Tmux()
    _TMUX_SERVERS.append(tmux)
    return tmux


def demo_spec() -> Any:
    from aimterm.adapter.registry import load_adapter

    return load_adapter("demo")


def echo_spec() -> Any:
    from aimterm.adapter.loader import load_text

    return load_text(echo_adapter_yaml(), f"{ADAPTER_NAME}.yaml")


# -- 1. spawn-to-ready ----------------------------------------------------------------------------


def spawn_aimterm(fx: Fixture, n: int, hosts: int | None = 0) -> float:
    from aimterm.pool import GroupSpec, Pool

    pool = Pool([GroupSpec(demo_spec(), count=n, cwd=fx.work, env=fx.demo_env())], hosts=hosts)
    try:
        t0 = time.perf_counter()
        pool.start(wait=True, timeout=90)
        wall = time.perf_counter() - t0
        states = Counter(row["state"] for row in pool.status())
        if states != Counter({"idle": n}):
            raise RuntimeError(f"aimterm: not all idle after start: {dict(states)}")
        return wall
    finally:
        pool.shutdown()


def spawn_pexpect(fx: Fixture, n: int) -> float:
    children: list[Any] = [None] * n
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            children[i] = pexpect_demo_ready(DEMO_COMMAND, cwd=fx.work, env=fx.demo_env())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    try:
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        wall = time.perf_counter() - t0
        if errors or any(c is None for c in children):
            raise RuntimeError(f"pexpect: {len(errors)} agents failed: {errors[:1]!r}")
        return wall
    finally:
        for t in threads:
            t.join(90)
        close_pexpect(children)


def tmux_start_demo(fx: Fixture, tmux: Tmux, n: int, interval: float = 0.01,
                    timeout: float = 90.0) -> float:
    """new-session + new-window per agent while one poller sweeps capture-pane over the
    panes not yet ready; returns the time from the first tmux call until the last pane shows
    the idle status line."""
    ready_at: dict[str, float] = {}
    all_ready = threading.Event()

    def check(pane: str, text: str) -> bool:
        if DEMO_READY in text:
            ready_at[pane] = time.perf_counter()
            if len(ready_at) >= n:
                all_ready.set()
            return True
        return False

    poller = Poller(tmux, interval, check)
    t0 = time.perf_counter()
    poller.start()
    try:
        for _ in range(n):
            poller.watch(tmux.new_pane(DEMO_COMMAND, cwd=fx.work, env=fx.demo_env()))
        if not all_ready.wait(timeout):
            raise RuntimeError(f"tmux: only {len(ready_at)}/{n} panes ready after {timeout}s "
                               f"(poller error: {poller.error!r})")
    finally:
        poller.stop()
    return max(ready_at.values()) - t0


def spawn_tmux(fx: Fixture, n: int) -> float:
    tmux = new_tmux()
    try:
        return tmux_start_demo(fx, tmux, n)
    finally:
        tmux.kill()


def bench_spawn(fx: Fixture, sizes: Sequence[int], reps_small: int, reps_large: int
                ) -> dict[str, Any]:
    sides: dict[str, Callable[[Fixture, int], float]] = {
        "aimterm": spawn_aimterm, "pexpect": spawn_pexpect, "tmux_10ms": spawn_tmux,
        # The same fleet in session hosts, one per core (their start-up included).
        "aimterm_hosts": lambda fx, n: spawn_aimterm(fx, n, hosts=None)}
    names = list(sides)
    out: dict[str, Any] = {"program": "aimterm.demo_agent (demo adapter), state.json "
                                      "pre-created (no first-run dialog)",
                           "settle_ms": demo_spec().settle_ms, "sizes": {}}
    for n in sizes:
        reps = reps_small if n <= 20 else reps_large
        runs: dict[str, list[float]] = {k: [] for k in names}
        for rep in range(reps):
            order = names[rep % len(names):] + names[: rep % len(names)]
            for name in order:
                runs[name].append(sides[name](fx, n))
                time.sleep(0.3)  # let the last fleet's exit settle
            log(f"  spawn N={n} rep {rep + 1}/{reps}: "
                + ", ".join(f"{k} {runs[k][-1]:.3f} s" for k in names))
        out["sizes"][str(n)] = {
            k: {"median_s": rnd(median(v)), "runs_s": [rnd(x) for x in v]} for k, v in runs.items()
        }
    return out


# -- 2. turns per second (closed loop, zero think) -----------------------------------------------


class AimtermThroughput:
    name = "aimterm"

    def __init__(self, n: int, hosts: int | None = 0) -> None:
        from aimterm.pool import GroupSpec, Pool

        self.n = n
        if hosts != 0:
            self.name = "aimterm_hosts"
        self.pool = Pool([GroupSpec(echo_spec(), count=n, env={"FAKE_THINK": "0"})],
                         hosts=hosts)
        self.counter = 0
        self.errors = 0
        self.cpu_s = 0.0  # this whole process
        self.loop_cpu_s = 0.0  # the reader-loop thread alone

    def start(self) -> None:
        self.pool.start(wait=True, timeout=60)

    def loop_cpu(self) -> float:
        return float(self.pool.ioloop.run_sync(time.thread_time))

    def run(self, seconds: float) -> tuple[int, float]:
        """N prompts in flight; each completion (a done callback, on the reader loop) submits
        the next until the time is up."""
        pool = self.pool
        lock = threading.Lock()
        state = {"done": 0, "inflight": 0, "last": 0.0}
        drained = threading.Event()
        deadline = 0.0

        def submit() -> None:
            self.counter += 1
            msg = f"m{self.counter}"
            fut = pool.submit(msg)
            fut.add_done_callback(lambda f, msg=msg: finished(f, msg))

        def finished(fut: concurrent.futures.Future[Any], msg: str) -> None:
            now = time.perf_counter()
            try:
                turn, exc = fut.result(), None
            except Exception as error:  # noqa: BLE001 - counted as an error, the loop goes on
                turn, exc = None, error
            ok = turn is not None and turn.status.value == "done" and turn.reply == f"echo: {msg}"
            with lock:
                state["done"] += 1
                state["last"] = now
                if not ok:
                    self.errors += 1
                if now < deadline and exc is None:
                    again = True
                else:
                    again = False
                    state["inflight"] -= 1
                    if state["inflight"] == 0:
                        drained.set()
            if again:
                submit()

        state["inflight"] = self.n
        loop0, cpu0 = self.loop_cpu(), time.process_time()
        t0 = time.perf_counter()
        deadline = t0 + seconds
        # Submitted on the loop, like every later one: a turn then cannot finish before its
        # done callback is added (which would run it, and the next submit, in this thread).
        def first() -> None:
            for _ in range(self.n):
                submit()

        pool.ioloop.run_sync(first)
        if not drained.wait(seconds + 30):
            raise RuntimeError("aimterm: turns did not drain")
        self.cpu_s += time.process_time() - cpu0
        self.loop_cpu_s += self.loop_cpu() - loop0
        return state["done"], state["last"] - t0

    def stop(self) -> None:
        self.pool.shutdown()


class PexpectThroughput:
    name = "pexpect"

    def __init__(self, n: int) -> None:
        self.n = n
        self.children: list[Any] = []
        self.errors = 0
        self.cpu_s = 0.0

    def start(self) -> None:
        for _ in range(self.n):
            child = pexpect_spawn(ECHO_COMMAND, cwd=str(ROOT), env={"FAKE_THINK": "0"})
            self.children.append(child)
            child.expect_exact(ECHO_PROMPT.encode())

    def run(self, seconds: float) -> tuple[int, float]:
        counts = [0] * self.n
        ends = [0.0] * self.n
        barrier = threading.Barrier(self.n + 1)
        deadline = 0.0
        prompt = ECHO_PROMPT.encode()

        def loop(i: int) -> None:
            child = self.children[i]
            sendline, expect_exact = child.sendline, child.expect_exact
            clock = time.perf_counter
            barrier.wait()
            k = 0
            while clock() < deadline:
                k += 1
                line = f"m{k}".encode()
                sendline(line)
                expect_exact(prompt)
                if b"echo: " + line not in child.before:
                    self.errors += 1
                counts[i] += 1
            ends[i] = clock()

        threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(self.n)]
        for t in threads:
            t.start()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        deadline = t0 + seconds
        barrier.wait()
        for t in threads:
            t.join(seconds + 30)
        self.cpu_s += time.process_time() - cpu0
        return sum(counts), max(ends) - t0

    def stop(self) -> None:
        close_pexpect(self.children)


class TmuxThroughput:
    """N echo panes; one poller per interval: sweep capture-pane over the panes, and when a
    pane shows ``echo: <msg>`` and the prompt again, count it and type the next prompt."""

    def __init__(self, n: int, tmux: Tmux, panes: list[str], interval: float) -> None:
        self.name = f"tmux_{int(interval * 1000)}ms"
        self.n = n
        self.tmux = tmux
        self.panes = panes
        self.interval = interval
        self.errors = 0
        self.cpu_s = 0.0  # poller thread + tmux client processes + tmux server

    @staticmethod
    def start_panes(tmux: Tmux, n: int, timeout: float = 30.0) -> list[str]:
        panes = [tmux.new_pane(ECHO_COMMAND, cwd=str(ROOT), env={"FAKE_THINK": "0"})
                 for _ in range(n)]
        deadline = time.monotonic() + timeout
        for pane in panes:
            while True:
                text = tmux.capture(pane) or ""
                if text.rstrip().endswith(ECHO_PROMPT.rstrip()):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tmux: echo pane {pane} not ready")
                time.sleep(0.01)
        return panes

    def start(self) -> None:
        pass

    def run(self, seconds: float) -> tuple[int, float]:
        tmux = self.tmux
        expected: dict[str, str] = {}
        counter = [0]
        done = [0]
        last = [0.0]
        finished = threading.Event()
        active = [len(self.panes)]
        deadline = 0.0

        def send(pane: str) -> None:
            counter[0] += 1
            expected[pane] = f"m{counter[0]}"
            tmux.send_line(pane, expected[pane])

        def check(pane: str, text: str) -> bool:
            lines = text.rstrip().split("\n")
            if len(lines) < 2 or lines[-1].rstrip() != ECHO_PROMPT.rstrip() \
                    or lines[-2].rstrip() != f"echo: {expected[pane]}":
                return False
            now = time.perf_counter()
            done[0] += 1
            last[0] = now
            if now < deadline:
                send(pane)
                return False
            active[0] -= 1
            if active[0] == 0:
                finished.set()
            return True

        poller = Poller(tmux, self.interval, check)
        server = server_cpu = None
        try:
            import psutil

            server = psutil.Process(tmux.server_pid())
            server_cpu = sum(server.cpu_times()[:2])
        except Exception:  # noqa: BLE001 - CPU figure only
            server = None
        kids0 = children_cpu()
        t0 = time.perf_counter()
        deadline = t0 + seconds
        for pane in self.panes:
            send(pane)
            poller.watch(pane)
        poller.start()
        try:
            if not finished.wait(seconds + 30):
                raise RuntimeError(f"{self.name}: turns did not drain ({poller.error!r})")
        finally:
            poller.stop()
        self.cpu_s += poller.cpu_s + children_cpu() - kids0
        if server is not None and server_cpu is not None:
            self.cpu_s += sum(server.cpu_times()[:2]) - server_cpu
        return done[0], last[0] - t0

    def stop(self) -> None:
        pass


def bench_throughput(sizes: Sequence[int], seconds: float, blocks: int) -> dict[str, Any]:
    out: dict[str, Any] = {"program": "tests/fakes/echo_repl.py, FAKE_THINK=0",
                           "seconds_per_side": seconds, "blocks": blocks, "sizes": {}}
    for n in sizes:
        tmux = new_tmux()
        sides: list[Any] = []
        try:
            aim = AimtermThroughput(n)
            sides.append(aim)
            aim.start()
            hosted = AimtermThroughput(n, hosts=None)
            sides.append(hosted)
            hosted.start()
            pex = PexpectThroughput(n)
            sides.append(pex)
            pex.start()
            panes = TmuxThroughput.start_panes(tmux, n)
            sides += [TmuxThroughput(n, tmux, panes, 0.01), TmuxThroughput(n, tmux, panes, 0.1)]
            totals = {s.name: [0, 0.0] for s in sides}
            for b in range(blocks):
                order = sides if b % 2 == 0 else sides[::-1]
                for side in order:
                    count, elapsed = side.run(seconds / blocks)
                    totals[side.name][0] += count
                    totals[side.name][1] += elapsed
                log(f"  throughput N={n} block {b + 1}/{blocks}: "
                    + ", ".join(f"{k} {v[0] / v[1]:.0f}/s" for k, v in totals.items()))
            cell: dict[str, Any] = {}
            for side in sides:
                count, elapsed = totals[side.name]
                cell[side.name] = {"turns_per_s": round(count / elapsed, 1), "turns": count,
                                   "seconds": rnd(elapsed), "errors": side.errors,
                                   "cpu_us_per_turn": round(side.cpu_s / max(count, 1) * 1e6, 1)}
                if isinstance(side, AimtermThroughput):
                    cell[side.name]["loop_thread_cpu_us_per_turn"] = round(
                        side.loop_cpu_s / max(count, 1) * 1e6, 1)
                    cell[side.name]["loop_thread_busy_pct"] = round(
                        100 * side.loop_cpu_s / elapsed, 1)
            a = cell["aimterm"]["turns_per_s"]
            cell["aimterm_vs_pexpect"] = rnd(a / cell["pexpect"]["turns_per_s"])
            cell["aimterm_hosts_vs_pexpect"] = rnd(cell["aimterm_hosts"]["turns_per_s"]
                                                   / cell["pexpect"]["turns_per_s"])
            cell["aimterm_vs_tmux_10ms"] = rnd(a / cell["tmux_10ms"]["turns_per_s"], 1)
            cell["aimterm_vs_tmux_100ms"] = rnd(a / cell["tmux_100ms"]["turns_per_s"], 1)
            out["sizes"][str(n)] = cell
        finally:
            for side in sides:
                try:
                    side.stop()
                except Exception as exc:  # noqa: BLE001 - keep stopping the others
                    log(f"  stopping {side.name} failed: {exc!r}")
            tmux.kill()
    return out


def profile_throughput(n: int, seconds: float, top: int = 20) -> dict[str, Any]:
    """cProfile the reader-loop thread (where submit, detection, reply extraction and the
    done callbacks run) during the aimterm closed loop. Profiled times are inflated; use them
    to rank."""
    import cProfile
    import pstats

    side = AimtermThroughput(n)
    prof = cProfile.Profile()
    try:
        side.start()
        side.run(0.3)
        ioloop = side.pool.ioloop
        ioloop.run_sync(prof.enable)
        count, elapsed = side.run(seconds)
        ioloop.run_sync(prof.disable)
    finally:
        side.stop()
    rows = profile_rows(pstats.Stats(prof), count)
    total_own = sum(r["tottime_us_per_turn"] for r in rows)
    by_file: dict[str, float] = {}
    for r in rows:
        fname = r["function"].rsplit("(", 1)[1].split(":")[0].rstrip(")")
        by_file[fname] = by_file.get(fname, 0.0) + r["tottime_us_per_turn"]
    files = sorted(by_file.items(), key=lambda kv: kv[1], reverse=True)[:12]
    return {"instances": n, "turns": count, "turns_per_s_profiled": round(count / elapsed, 1),
            "loop_own_us_per_turn_profiled": round(total_own, 1),
            "top_functions": rows[:top],
            "own_time_by_file_us_per_turn": {k: round(v, 1) for k, v in files}}


# -- 3. parallel speedup (1 s think) --------------------------------------------------------------


def bench_speedup(sizes: Sequence[int], think: float) -> dict[str, Any]:
    from aimterm.pool import GroupSpec, Pool

    env = {"FAKE_THINK": str(think)}
    pool = Pool([GroupSpec(echo_spec(), count=1, env=env)])
    children: list[Any] = []
    walls: dict[str, dict[int, float]] = {"aimterm": {}, "pexpect": {}}
    errors = {"aimterm": 0, "pexpect": 0}
    counter = [0]

    def run_aimterm(n: int) -> float:
        pool.scale(ADAPTER_NAME, n)
        pool.wait_ready(30)
        states = Counter(row["state"] for row in pool.status())
        if states != Counter({"idle": n}):
            raise RuntimeError(f"aimterm: scale to {n}: {dict(states)}")
        t0 = time.perf_counter()
        futures = []
        for _ in range(2 * n):
            counter[0] += 1
            futures.append(pool.submit(f"p{counter[0]}"))
        turns = [f.result(60) for f in futures]
        wall = time.perf_counter() - t0
        errors["aimterm"] += sum(1 for t in turns if t.status.value != "done")
        return wall

    def run_pexpect(n: int) -> float:
        while len(children) < n:
            child = pexpect_spawn(ECHO_COMMAND, cwd=str(ROOT), env=env)
            children.append(child)
            child.expect_exact(ECHO_PROMPT.encode())
        barrier = threading.Barrier(n + 1)

        def two(child: Any, i: int) -> None:
            barrier.wait()
            for k in range(2):
                line = f"p{i}-{k}".encode()
                child.sendline(line)
                child.expect_exact(ECHO_PROMPT.encode())
                if b"echo: " + line not in child.before:
                    errors["pexpect"] += 1

        threads = [threading.Thread(target=two, args=(children[i], i), daemon=True)
                   for i in range(n)]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        barrier.wait()
        for t in threads:
            t.join(60)
        return time.perf_counter() - t0

    try:
        pool.start(wait=True, timeout=30)
        for idx, n in enumerate(sizes):
            order = [("aimterm", run_aimterm), ("pexpect", run_pexpect)]
            if idx % 2:
                order.reverse()
            for name, fn in order:
                walls[name][n] = fn(n)
            log(f"  speedup N={n}: aimterm {walls['aimterm'][n]:.3f} s, "
                f"pexpect {walls['pexpect'][n]:.3f} s for {2 * n} prompts")
    finally:
        pool.shutdown()
        close_pexpect(children)
    out: dict[str, Any] = {"program": f"tests/fakes/echo_repl.py, FAKE_THINK={think}",
                           "think_s": think, "prompts_per_instance": 2, "errors": errors,
                           "sizes": {}}
    base = {k: v[sizes[0]] / (2 * sizes[0]) for k, v in walls.items()}
    out["single_instance_s_per_prompt"] = {k: rnd(v, 4) for k, v in base.items()}
    for n in sizes:
        out["sizes"][str(n)] = {
            k: {"wall_s": rnd(walls[k][n], 4),
                "speedup": rnd(2 * n * base[k] / walls[k][n]),
                "efficiency": rnd(2 * n * base[k] / walls[k][n] / n)}
            for k in walls}
    return out


# -- 4. idle CPU ------------------------------------------------------------------------------------


def own_cpu() -> float:
    """CPU time of this whole process, all threads (CLOCK_PROCESS_CPUTIME_ID, ns resolution)."""
    return time.process_time()


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def proc_cpu(pids: Sequence[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def pct(cpu_s: float, wall_s: float) -> float:
    return round(100.0 * cpu_s / wall_s, 3)


def idle_aimterm(fx: Fixture, n: int, seconds: float) -> dict[str, Any]:
    from aimterm.pool import GroupSpec, Pool

    pool = Pool([GroupSpec(demo_spec(), count=n, cwd=fx.work, env=fx.demo_env())])
    try:
        pool.start(wait=True, timeout=90)
        pids = [row["pid"] for row in pool.status() if row.get("pid")]
        time.sleep(0.5)  # past the settle timers of the last frames
        c0, a0, t0 = own_cpu(), proc_cpu(pids), time.perf_counter()
        time.sleep(seconds)
        c1, a1, t1 = own_cpu(), proc_cpu(pids), time.perf_counter()
        states = Counter(row["state"] for row in pool.status())
    finally:
        pool.shutdown()
    wall = t1 - t0
    return {"controller_cpu_s": rnd(c1 - c0, 4), "controller_pct_of_core": pct(c1 - c0, wall),
            "agents_cpu_s": rnd(a1 - a0, 4), "agents": len(pids), "states": dict(states),
            "window_s": rnd(wall)}


def idle_pexpect(fx: Fixture, n: int, seconds: float) -> dict[str, Any]:
    import pexpect

    children: list[Any] = [None] * n
    errors: list[BaseException] = []

    def start(i: int) -> None:
        try:
            children[i] = pexpect_demo_ready(DEMO_COMMAND, cwd=fx.work, env=fx.demo_env())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    try:
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            list(ex.map(start, range(n)))
        if errors:
            raise RuntimeError(f"pexpect: {len(errors)} agents failed: {errors[:1]!r}")
        time.sleep(0.5)
        barrier = threading.Barrier(n + 1)

        def watch(child: Any) -> None:
            barrier.wait()
            try:  # blocked in select until the window ends; a busy status would wake it
                child.expect_exact(b"esc to interrupt", timeout=seconds)
            except pexpect.TIMEOUT:
                pass

        threads = [threading.Thread(target=watch, args=(c,), daemon=True) for c in children]
        for t in threads:
            t.start()
        barrier.wait()
        c0, t0 = own_cpu(), time.perf_counter()
        for t in threads:
            t.join(seconds + 30)
        c1, t1 = own_cpu(), time.perf_counter()
    finally:
        close_pexpect(children)
    return {"controller_cpu_s": rnd(c1 - c0, 4), "controller_pct_of_core": pct(c1 - c0, t1 - t0),
            "window_s": rnd(t1 - t0), "note": "one thread per agent blocked in expect()"}


def idle_tmux(fx: Fixture, n: int, seconds: float, intervals: Sequence[float]
              ) -> dict[str, Any]:
    import psutil

    tmux = new_tmux()
    out: dict[str, Any] = {}
    try:
        tmux_start_demo(fx, tmux, n)
        server = psutil.Process(tmux.server_pid())
        time.sleep(0.5)
        for interval in intervals:
            poller = Poller(tmux, interval, lambda _p, text: "esc to interrupt" in text,
                            watch_all=tmux.panes)
            s0, k0, t0 = sum(server.cpu_times()[:2]), children_cpu(), time.perf_counter()
            poller.start()
            time.sleep(seconds)
            poller.stop()
            s1, k1, t1 = sum(server.cpu_times()[:2]), children_cpu(), time.perf_counter()
            wall = t1 - t0
            thread_s, clients_s, server_s = poller.cpu_s, k1 - k0, s1 - s0
            total = thread_s + clients_s + server_s
            out[f"tmux_{int(interval * 1000)}ms"] = {
                "pct_of_core": pct(total, wall),
                "poller_and_server_pct_of_core": pct(thread_s + server_s, wall),
                "poller_thread_cpu_s": rnd(thread_s, 4),
                "client_processes_cpu_s": rnd(clients_s, 4),
                "server_cpu_s": rnd(server_s, 4),
                "sweeps": poller.sweeps, "sweeps_per_s": round(poller.sweeps / wall, 2),
                "window_s": rnd(wall)}
            time.sleep(0.3)
    finally:
        tmux.kill()
    return out


def bench_idle(fx: Fixture, n: int, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"program": "aimterm.demo_agent, idle at its prompt", "agents": n,
                           "seconds": seconds}
    out["aimterm"] = idle_aimterm(fx, n, seconds)
    log(f"  idle aimterm: {out['aimterm']['controller_pct_of_core']}% of a core")
    out["pexpect"] = idle_pexpect(fx, n, seconds)
    log(f"  idle pexpect: {out['pexpect']['controller_pct_of_core']}% of a core")
    out.update(idle_tmux(fx, n, seconds, (0.1, 0.01)))
    log(f"  idle tmux: 100 ms {out['tmux_100ms']['pct_of_core']}%, "
        f"10 ms {out['tmux_10ms']['pct_of_core']}% of a core")
    return out


# -- 5. controller memory (fresh subprocess per size and side) ------------------------------------


def memory_child(side: str, n: int) -> dict[str, Any]:
    """Runs inside ``fleet.py --memory-child SIDE N``: start N demo agents, one turn each,
    then read this process's RSS (and, for tmux, the server's)."""
    with tempfile.TemporaryDirectory(prefix="aimterm-fleet-mem-") as tmp:
        fx = Fixture(tmp)
        gc.collect()
        before = rss_mb()
        out: dict[str, Any] = {"side": side, "agents": n, "rss_before_mb": round(before, 2)}
        if side in ("aimterm", "aimterm_hosts"):
            from aimterm.pool import GroupSpec, Pool

            pool = Pool([GroupSpec(demo_spec(), count=n, cwd=fx.work, env=fx.demo_env())],
                        hosts=None if side == "aimterm_hosts" else 0)
            try:
                pool.start(wait=True, timeout=90)
                turns = [f.result(30) for f in [pool.submit("hello") for _ in range(n)]]
                out["turns_done"] = sum(1 for t in turns if t.status.value == "done")
                gc.collect()
                out["rss_mb"] = round(rss_mb(), 2)
                if pool.hosts is not None:
                    # The screens live in the hosts: their memory counts, as tmux's server's.
                    out["server_rss_mb"] = round(sum(rss_mb(p) for p in pool.hosts.pids()), 2)
                    out["total_rss_mb"] = round(out["rss_mb"] + out["server_rss_mb"], 2)
            finally:
                pool.shutdown()
        elif side == "pexpect":
            children: list[Any] = [None] * n
            done = [0]

            def one(i: int) -> None:
                child = pexpect_demo_ready(DEMO_COMMAND, cwd=fx.work, env=fx.demo_env())
                children[i] = child
                child.send(b"hello")
                time.sleep(0.05)  # the agent treats text + Enter in one burst as a paste
                child.send(b"\r")
                child.expect_exact(b"Echo: hello")
                child.expect_exact(DEMO_READY.encode())
                done[0] += 1

            try:
                with concurrent.futures.ThreadPoolExecutor(n) as ex:
                    list(ex.map(one, range(n)))
                out["turns_done"] = done[0]
                gc.collect()
                out["rss_mb"] = round(rss_mb(), 2)
            finally:
                close_pexpect(children)
        elif side == "tmux":
            tmux = Tmux()
            try:
                tmux_start_demo(fx, tmux, n)
                for pane in tmux.panes:
                    tmux.send_text(pane, "hello")
                time.sleep(0.05)
                for pane in tmux.panes:
                    tmux.send_enter(pane)
                done = threading.Event()
                seen: set[str] = set()

                def check(pane: str, text: str) -> bool:
                    if "Echo: hello" in text and DEMO_READY in text:
                        seen.add(pane)
                        if len(seen) == n:
                            done.set()
                        return True
                    return False

                poller = Poller(tmux, 0.01, check)
                for pane in tmux.panes:
                    poller.watch(pane)
                poller.start()
                done.wait(60)
                poller.stop()
                out["turns_done"] = len(seen)
                gc.collect()
                out["rss_mb"] = round(rss_mb(), 2)
                out["server_rss_mb"] = round(rss_mb(tmux.server_pid()), 2)
                out["total_rss_mb"] = round(out["rss_mb"] + out["server_rss_mb"], 2)
            finally:
                tmux.kill()
        else:
            raise ValueError(side)
    return out


def bench_memory(sizes: Sequence[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"program": "aimterm.demo_agent, one turn each (think 0.05 s)",
                           "sizes": {}}
    for n in sizes:
        cell: dict[str, Any] = {}
        for side in ("aimterm", "aimterm_hosts", "pexpect", "tmux"):
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()),
                                   "--memory-child", side, str(n)],
                                  capture_output=True, text=True, timeout=300, cwd=ROOT)
            if proc.returncode != 0:
                raise RuntimeError(f"memory child {side} {n} failed ({proc.returncode}): "
                                   f"{proc.stderr[-1500:]}")
            cell[side] = json.loads(proc.stdout)
        log(f"  memory N={n}: aimterm {cell['aimterm']['rss_mb']} MB (in hosts: "
            f"{cell['aimterm_hosts']['rss_mb']} MB + hosts "
            f"{cell['aimterm_hosts']['server_rss_mb']} MB), pexpect "
            f"{cell['pexpect']['rss_mb']} MB, tmux {cell['tmux']['rss_mb']} MB + server "
            f"{cell['tmux']['server_rss_mb']} MB")
        out["sizes"][str(n)] = cell
    return out


# -- main -----------------------------------------------------------------------------------------


def section(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return run_section(name, fn, log)


def leftovers() -> dict[str, Any]:
    """Processes of ours still alive, and tmux servers still answering, after the run."""
    import psutil

    kids = [f"{p.pid} {' '.join(p.cmdline()[:3])}"
            for p in psutil.Process().children(recursive=True) if p.is_running()]
    servers = []
    for tmux in _TMUX_SERVERS:
        tmux.kill()
        probe = subprocess.run([*tmux.base, "list-sessions"], capture_output=True)
        if probe.returncode == 0:
            servers.append(tmux.socket)
    return {"child_processes": kids, "tmux_servers": servers}


def get(doc: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def judge(spawn: dict[str, Any], tput: dict[str, Any], speed: dict[str, Any],
          idle: dict[str, Any], mem: dict[str, Any], mem_sizes: Sequence[int]
          ) -> tuple[dict[str, str], dict[str, bool | None]]:
    aims: dict[str, str] = {}
    met: dict[str, bool | None] = {}

    def put(key: str, aim: str, value: Any, ok: Callable[[Any], bool]) -> None:
        aims[key] = aim
        met[key] = None if value is None else bool(ok(value))

    put("spawn_5", f"aimterm median < {AIMS['spawn_5_s']} s",
        get(spawn, "sizes", "5", "aimterm", "median_s"), lambda v: v < AIMS["spawn_5_s"])
    if "100" in (get(spawn, "sizes") or {}):
        put("spawn_100", f"aimterm median < {AIMS['spawn_100_s']} s",
            get(spawn, "sizes", "100", "aimterm", "median_s"), lambda v: v < AIMS["spawn_100_s"])
    for n in (get(tput, "sizes") or {}):
        cell = tput["sizes"][n]
        put(f"throughput_{n}_vs_pexpect", f">= {AIMS['throughput_vs_pexpect']} x pexpect",
            cell.get("aimterm_vs_pexpect"), lambda v: v >= AIMS["throughput_vs_pexpect"])
        put(f"throughput_{n}_vs_tmux_10ms", f">= {AIMS['throughput_vs_tmux_10ms']} x tmux 10 ms",
            cell.get("aimterm_vs_tmux_10ms"), lambda v: v >= AIMS["throughput_vs_tmux_10ms"])
    for n in (get(speed, "sizes") or {}):
        need = AIMS["speedup_per_instance"] * int(n)
        put(f"speedup_{n}", f">= {need:g}", get(speed, "sizes", n, "aimterm", "speedup"),
            lambda v, need=need: v >= need and not get(speed, "errors", "aimterm"))
    put("idle_cpu", f"< {AIMS['idle_cpu_pct']}% of one core",
        get(idle, "aimterm", "controller_pct_of_core"), lambda v: v < AIMS["idle_cpu_pct"])
    small, large = mem_sizes[0], mem_sizes[-1]
    put(f"rss_{small}", f"< {AIMS['rss_5_mb']} MB",
        get(mem, "sizes", str(small), "aimterm", "rss_mb"), lambda v: v < AIMS["rss_5_mb"])
    put(f"rss_{large}", f"< {AIMS['rss_100_mb']} MB" + ("" if large == 100 else
                                                        " (aim is for 100)"),
        get(mem, "sizes", str(large), "aimterm", "rss_mb"), lambda v: v < AIMS["rss_100_mb"])
    return aims, met


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller fleets, shorter windows")
    p.add_argument("--profile", action="store_true",
                   help="also cProfile the reader loop during the throughput loop (N=1, N=20)")
    p.add_argument("--memory-child", nargs=2, metavar=("SIDE", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.memory_child is not None:
        print(json.dumps(memory_child(args.memory_child[0], int(args.memory_child[1]))))
        return 0

    quick = args.quick
    spawn_sizes = (5, 20) if quick else (5, 20, 100)
    tput_sizes = (1, 5, 20)
    tput_seconds = 1.5 if quick else 3.0
    speed_sizes = (1, 2, 4) if quick else tuple(range(1, 9))
    idle_n, idle_s = (20, 2.0) if quick else (100, 5.0)
    mem_sizes = (5, 20) if quick else (5, 100)

    started = time.perf_counter()
    doc: dict[str, Any] = {"benchmark": "fleet", "quick": quick,
                           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine()}
    try:
        doc["machine"]["tmux"] = subprocess.run(["tmux", "-V"], capture_output=True,
                                                text=True).stdout.strip()
    except OSError:
        pass
    try:
        with tempfile.TemporaryDirectory(prefix="aimterm-fleet-") as tmp:
            fx = Fixture(tmp)
            doc["spawn_to_ready"] = section(
                "spawn-to-ready", lambda: bench_spawn(fx, spawn_sizes, 2 if quick else 3,
                                                      1 if quick else 2))
            doc["turns_per_second"] = section(
                "turns per second", lambda: bench_throughput(tput_sizes, tput_seconds, 2))
            if args.profile:
                doc["turns_per_second"]["profile"] = {
                    str(n): section(f"throughput profile N={n}",
                                    lambda n=n: profile_throughput(n, 2.0))
                    for n in (1, 20)}
            doc["parallel_speedup"] = section(
                "parallel speedup", lambda: bench_speedup(speed_sizes, 1.0))
            doc["idle_cpu"] = section("idle CPU", lambda: bench_idle(fx, idle_n, idle_s))
            doc["memory"] = section("controller memory", lambda: bench_memory(mem_sizes))
    finally:
        doc["leftovers"] = leftovers()
    aims, met = judge(doc["spawn_to_ready"], doc["turns_per_second"], doc["parallel_speedup"],
                      doc["idle_cpu"], doc["memory"], mem_sizes)
    doc["aims"] = aims
    doc["met"] = met
    doc["elapsed_s"] = round(time.perf_counter() - started, 2)
    print(json.dumps(doc, indent=2))
    log(f"done in {doc['elapsed_s']} s; missed: "
        f"{[k for k, v in met.items() if v is False] or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
