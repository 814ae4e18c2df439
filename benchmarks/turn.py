#!/usr/bin/env python3
"""Turn benchmarks for aimterm: line-tool latency against raw pexpect, detection lag on the
demo agent, and memory per session.

Run from the repository root::

    python benchmarks/turn.py [--turns 500] [--quick]

Prints one JSON document to stdout; progress goes to stderr. See benchmarks/README.md for
what each figure means.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ECHO_REPL = ROOT / "tests" / "fakes" / "echo_repl.py"

# What the figures should come in under.
AIMS = {
    "overhead_p50_ms": 0.5,
    "detection_lag_ms": 5.0,  # p50 and p95
    "memory_per_session_mb": 3.0,
}

WARMUP_TURNS = 50
PROMPT = "ready> "


def log(message: str) -> None:
    print(f"[turn-bench] {message}", file=sys.stderr, flush=True)


# -- statistics ---------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), ``q`` in [0, 100]."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def summary_ms(seconds: list[float], *, keys: tuple[str, ...] = ("p50", "p95", "p99", "mean"),
               ) -> dict[str, float]:
    values = sorted(s * 1000.0 for s in seconds)
    out: dict[str, float] = {"n": len(values)}
    for key in keys:
        if key == "mean":
            out["mean_ms"] = sum(values) / len(values) if values else math.nan
        elif key == "max":
            out["max_ms"] = values[-1] if values else math.nan
        elif key == "min":
            out["min_ms"] = values[0] if values else math.nan
        else:
            out[f"{key}_ms"] = percentile(values, float(key[1:]))
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


# -- 1. line-tool turn latency ------------------------------------------------------------------


def echo_adapter_yaml() -> str:
    command = json.dumps([sys.executable, str(ECHO_REPL)])
    return textwrap.dedent(f"""\
        name: echo-bench
        description: tests/fakes/echo_repl.py as a line tool (benchmark)
        command: {command}
        detect: stream
        states:
          - {{state: idle, region: 'bottom:1', any: ['^ready>$']}}
        settle_ms: 0
        submit: {{keys: [enter], verify: output}}
        reply: {{from: stream, strip: [echo, prompt]}}
        """)


class AimtermSide:
    """The echo REPL driven by an aimterm Session with a stream-mode adapter."""

    name = "aimterm"

    def __init__(self) -> None:
        from aimterm.adapter.loader import load_text
        from aimterm.session import Session

        self.spec = load_text(echo_adapter_yaml(), "echo-bench.yaml")
        self.session = Session(self.spec)
        self.mismatches: list[dict[str, Any]] = []
        self.counter = 0
        self.phases: list[tuple[float, Any, float]] = []

    def start(self) -> None:
        self.session.start()

    def phase_summary(self) -> dict[str, float]:
        """Median of each leg of a timed turn, from the Turn's own time.monotonic() stamps:
        call -> turn created on the loop -> prompt written -> first output read -> IDLE set
        -> send() returns."""
        legs: dict[str, list[float]] = {"call_to_started": [], "started_to_submitted": [],
                                        "submitted_to_first_output": [],
                                        "first_output_to_idle": [], "idle_to_return": []}
        for m0, t, m1 in self.phases:
            if None in (t.submitted_at, t.busy_at, t.idle_at):
                continue
            # busy_at is when the first output was read; it can precede submitted_at (the
            # stamp is taken after the write call returns) when the echo is that fast.
            legs["call_to_started"].append(t.started_at - m0)
            legs["started_to_submitted"].append(t.submitted_at - t.started_at)
            legs["submitted_to_first_output"].append(t.busy_at - t.submitted_at)
            legs["first_output_to_idle"].append(t.idle_at - t.busy_at)
            legs["idle_to_return"].append(m1 - t.idle_at)
        return {f"{k}_p50_ms": round(percentile(sorted(v), 50) * 1000, 4)
                for k, v in legs.items()}

    def run(self, n: int, samples: list[float] | None) -> None:
        send = self.session.send
        clock = time.perf_counter
        mono = time.monotonic
        for _ in range(n):
            i = self.counter
            self.counter += 1
            prompt = f"ping {i}"
            m0 = mono()
            t0 = clock()
            turn = send(prompt)
            dt = clock() - t0
            m1 = mono()
            if samples is not None:
                samples.append(dt)
                self.phases.append((m0, turn, m1))
            if turn.reply != f"echo: {prompt}" or turn.status.value != "done":
                self.mismatches.append({"turn": i, "status": turn.status.value,
                                        "reply": turn.reply[:200]})

    def stop(self) -> None:
        self.session.stop()


class PexpectSide:
    """The same program driven by plain pexpect: sendline, then wait for the prompt."""

    name = "pexpect"

    def __init__(self) -> None:
        self.child: Any = None
        self.mismatches: list[dict[str, Any]] = []
        self.counter = 0

    def start(self) -> None:
        import pexpect

        self.child = pexpect.spawn(sys.executable, [str(ECHO_REPL)], encoding=None, timeout=30)
        self.child.delaybeforesend = None
        self.child.delayafterread = None
        self.child.expect_exact(PROMPT.encode())

    def run(self, n: int, samples: list[float] | None) -> None:
        child = self.child
        sendline = child.sendline
        expect_exact = child.expect_exact
        prompt_bytes = PROMPT.encode()
        clock = time.perf_counter
        for _ in range(n):
            i = self.counter
            self.counter += 1
            line = f"ping {i}".encode()
            t0 = clock()
            sendline(line)
            expect_exact(prompt_bytes)
            dt = clock() - t0
            if samples is not None:
                samples.append(dt)
            if b"echo: " + line not in child.before:
                self.mismatches.append({"turn": i, "before": child.before[-200:].decode(
                    "utf-8", "replace")})

    def stop(self) -> None:
        if self.child is None:
            return
        try:
            if self.child.isalive():
                self.child.sendline(b"exit")
                self.child.expect(__import__("pexpect").EOF, timeout=5)
        except Exception:  # noqa: BLE001 - fall through to a hard close
            pass
        self.child.close(force=True)


def bench_line_tool(turns: int, blocks: int) -> dict[str, Any]:
    log(f"line tool: {WARMUP_TURNS} warm-up + {turns} timed turns per side, {blocks} blocks")
    aim, pex = AimtermSide(), PexpectSide()
    samples: dict[str, list[float]] = {"aimterm": [], "pexpect": []}
    try:
        aim.start()
        pex.start()
        aim.run(WARMUP_TURNS, None)
        pex.run(WARMUP_TURNS, None)
        per_block = [turns // blocks + (1 if b < turns % blocks else 0) for b in range(blocks)]
        for b, n in enumerate(per_block):
            # Alternate which side goes first so drift and cache effects hit both equally.
            order = (aim, pex) if b % 2 == 0 else (pex, aim)
            for side in order:
                side.run(n, samples[side.name])
            log(f"  block {b + 1}/{blocks}: aimterm p50 "
                f"{percentile(sorted(samples['aimterm'][-n:]), 50) * 1000:.3f} ms, pexpect p50 "
                f"{percentile(sorted(samples['pexpect'][-n:]), 50) * 1000:.3f} ms")
    finally:
        for side in (aim, pex):
            try:
                side.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                log(f"  stopping {side.name} failed: {exc!r}")
    a = summary_ms(samples["aimterm"])
    p = summary_ms(samples["pexpect"])
    return {
        "program": str(ECHO_REPL.relative_to(ROOT)),
        "turns": turns,
        "warmup_turns": WARMUP_TURNS,
        "blocks": blocks,
        "aimterm": a,
        "pexpect": p,
        "overhead_p50_ms": round(a["p50_ms"] - p["p50_ms"], 4),
        "overhead_mean_ms": round(a["mean_ms"] - p["mean_ms"], 4),
        "aimterm_legs": aim.phase_summary(),
        "mismatches": len(aim.mismatches),
        "mismatch_examples": aim.mismatches[:5],
        "pexpect_mismatches": len(pex.mismatches),
    }


def profile_rows(stats: Any, turns: int) -> list[dict[str, Any]]:
    """A ``pstats.Stats`` as rows per function, per turn, by own time (highest first)."""
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():
        where = f"{Path(file).name}:{line}" if line else file
        rows.append({"function": f"{func} ({where})", "calls_per_turn": round(nc / turns, 2),
                     "tottime_us_per_turn": round(tt / turns * 1e6, 2),
                     "cumtime_us_per_turn": round(ct / turns * 1e6, 2)})
    rows.sort(key=lambda r: r["tottime_us_per_turn"], reverse=True)
    return rows


def profile_line_tool(turns: int, top: int = 15) -> dict[str, Any]:
    """cProfile the aimterm side of the latency loop, in the calling thread and in the shared
    reader-loop thread (where output handling, detection and reply extraction run). Separate
    from the timed run: profiling slows everything down several-fold."""
    import cProfile
    import pstats

    log(f"profile: {turns} aimterm turns under cProfile (caller and loop thread)")
    side = AimtermSide()
    caller, loop_prof = cProfile.Profile(), cProfile.Profile()
    ioloop = side.session.ioloop
    try:
        side.start()
        side.run(WARMUP_TURNS, None)
        ioloop.run_sync(loop_prof.enable)
        caller.enable()
        t0 = time.perf_counter()
        side.run(turns, None)
        wall = time.perf_counter() - t0
        caller.disable()
        ioloop.run_sync(loop_prof.disable)
    finally:
        side.stop()

    tables = {"caller_thread": profile_rows(pstats.Stats(caller), turns)[:top],
              "loop_thread": profile_rows(pstats.Stats(loop_prof), turns)[:top]}
    for name, table in tables.items():
        log(f"  {name}: top by own time (µs per turn, profiled)")
        for e in table:
            log(f"    {e['tottime_us_per_turn']:8.2f} own {e['cumtime_us_per_turn']:8.2f} cum "
                f"{e['calls_per_turn']:6.2f}x  {e['function']}")
    return {"turns": turns, "wall_us_per_turn_profiled": round(wall / turns * 1e6, 1), **tables}


# -- 2. detection lag on the demo agent ----------------------------------------------------------


def read_new_lines(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1  # only whole lines; a partial one is read next time
    records = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return records, offset + end


def bench_demo_lag(turns: int) -> dict[str, Any]:
    from aimterm.adapter.registry import load_adapter
    from aimterm.events import StateChanged
    from aimterm.session import Session

    spec = load_adapter("demo")
    settle = spec.settle_ms / 1000.0
    log(f"demo detection lag: {turns} turns, think 0.05 s, settle {spec.settle_ms} ms")
    idle_events: list[float] = []
    lags: list[float] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="aimterm-bench-") as tmp:
        tmp_path = Path(tmp)
        work = tmp_path / "work"
        home = tmp_path / "home"
        work.mkdir()
        home.mkdir()
        trace = tmp_path / "trace.jsonl"
        env = {"AIMTERM_DEMO_THINK": "0.05", "AIMTERM_DEMO_HOME": str(home),
               "AIMTERM_DEMO_TRACE": str(trace)}
        session = Session(spec, cwd=work, env=env)

        def on_event(event: Any) -> None:
            if isinstance(event, StateChanged) and event.new == "idle":
                idle_events.append(event.mono)

        unsubscribe = session.subscribe(on_event)
        try:
            session.start()
            _, offset = read_new_lines(trace, 0)  # start-up frames are not a turn
            for i in range(turns):
                n_before = len(idle_events)
                turn = session.send(f"hello {i}")
                if turn.status.value != "done":
                    failures.append(f"turn {i}: {turn.status.value} {turn.error or ''}")
                    continue
                records, offset = read_new_lines(trace, offset)
                idle_frames = [r["t"] for r in records if r.get("state") == "idle"]
                new_events = idle_events[n_before:]
                if not idle_frames or not new_events:
                    failures.append(f"turn {i}: no idle frame or no IDLE event in the turn")
                    continue
                final_frame = idle_frames[-1]
                event_at = new_events[-1]
                lag = event_at - final_frame - settle
                lags.append(lag)
        finally:
            unsubscribe()
            session.stop()
    out: dict[str, Any] = {
        "adapter": "demo",
        "turns": turns,
        "think_s": 0.05,
        "settle_ms": spec.settle_ms,
        **{k: v for k, v in summary_ms(lags, keys=("p50", "p95", "max", "min", "mean")).items()},
        "failures": failures,
    }
    return out


# -- 3. memory per session (runs in a fresh subprocess) ------------------------------------------


def rss_mb(pid: int | None = None) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / (1024 * 1024)


def memory_child(n: int) -> dict[str, Any]:
    """Runs inside ``python benchmarks/turn.py --memory-child N``: a process that has done
    nothing but import aimterm and load the adapter before the first reading."""
    import psutil

    from aimterm.adapter.registry import load_adapter
    from aimterm.session import Session

    spec = load_adapter("demo")
    gc.collect()
    before = rss_mb()
    sessions: list[Session] = []
    child_rss: list[float] = []
    scrollback: list[int] = []
    turns_done = 0
    with tempfile.TemporaryDirectory(prefix="aimterm-bench-mem-") as tmp:
        try:
            for k in range(n):
                work = Path(tmp) / f"w{k}"
                home = Path(tmp) / f"h{k}"
                work.mkdir()
                home.mkdir()
                s = Session(spec, cwd=work,
                            env={"AIMTERM_DEMO_THINK": "0.05", "AIMTERM_DEMO_HOME": str(home)})
                sessions.append(s)
                s.start()
            after_start = rss_mb()
            errors: list[str] = []

            def drive(s: Session) -> None:
                nonlocal turns_done
                for prompt in ("hello one", "lines 200", "hello three"):
                    t = s.send(prompt)
                    if t.status.value != "done":
                        errors.append(f"{s.id}: {prompt!r} -> {t.status.value}")
                    else:
                        turns_done += 1

            threads = [threading.Thread(target=drive, args=(s,)) for s in sessions]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            gc.collect()
            after = rss_mb()
            for s in sessions:
                if s.pid is not None:
                    try:
                        child_rss.append(rss_mb(s.pid))
                    except psutil.Error:
                        pass
                if s.terminal is not None:
                    scrollback.append(s.terminal.snapshot().pushed)
        finally:
            for s in sessions:
                try:
                    s.stop()
                except Exception:  # noqa: BLE001 - keep stopping the others
                    pass
    return {
        "sessions": n,
        "turns_per_session": 3,
        "turns_done": turns_done,
        "errors": errors,
        "rss_before_mb": round(before, 2),
        "rss_after_start_mb": round(after_start, 2),
        "rss_after_mb": round(after, 2),
        "per_session_mb": round((after - before) / n, 3),
        "per_session_after_start_mb": round((after_start - before) / n, 3),
        "scrollback_lines_pushed_mean": (round(sum(scrollback) / len(scrollback), 1)
                                         if scrollback else None),
        "agent_child_rss_mb": {
            "mean": round(sum(child_rss) / len(child_rss), 2) if child_rss else None,
            "max": round(max(child_rss), 2) if child_rss else None,
            "n": len(child_rss),
            "note": "the demo agent's own process, not counted in per_session_mb",
        },
    }


def bench_memory(n: int) -> dict[str, Any]:
    log(f"memory: {n} demo sessions in a fresh subprocess")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory-child", str(n)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"memory subprocess failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


# -- main ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    try:
        import pexpect
        import psutil

        info["pexpect"] = pexpect.__version__
        info["psutil"] = psutil.__version__
        info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    except Exception:  # noqa: BLE001 - informative only
        pass
    try:
        from importlib.metadata import version

        info["aimterm"] = version("aimterm")
    except Exception:  # noqa: BLE001
        pass
    return info


def section(name: str, fn: Callable[[], dict[str, Any]],
            say: Callable[[str], None] = log) -> dict[str, Any]:
    """Run one figure's measurement; an error is reported in its place, and the others go on."""
    say(f"{name} ...")
    t0 = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - report it and go on with the others
        say(f"{name} failed: {exc!r}")
        return {"error": repr(exc), "elapsed_s": round(time.perf_counter() - t0, 2)}
    result["elapsed_s"] = round(time.perf_counter() - t0, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--turns", type=int, default=500, help="timed line-tool turns per side")
    p.add_argument("--blocks", type=int, default=5, help="alternating blocks per side")
    p.add_argument("--demo-turns", type=int, default=None,
                   help="demo detection-lag turns (default 30, --quick 10)")
    p.add_argument("--sessions", type=int, default=10, help="sessions for the memory figure")
    p.add_argument("--quick", action="store_true", help="fewer demo turns, for a fast check")
    p.add_argument("--profile", action="store_true",
                   help="also cProfile the aimterm side of the line-tool loop (separate run)")
    p.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.memory_child is not None:
        print(json.dumps(memory_child(args.memory_child)))
        return 0

    if args.turns < 1 or args.blocks < 1:
        p.error("--turns and --blocks must be positive")
    demo_turns = args.demo_turns if args.demo_turns is not None else (10 if args.quick else 30)
    started = time.perf_counter()

    line = section("line tool", lambda: bench_line_tool(args.turns, min(args.blocks, args.turns)))
    if args.profile and "error" not in line:
        line["profile"] = profile_line_tool(args.turns)
    lag = section("demo detection lag", lambda: bench_demo_lag(demo_turns))
    memory = section("memory", lambda: bench_memory(args.sessions))

    met = {
        "overhead_p50": (line.get("overhead_p50_ms") is not None
                         and line["overhead_p50_ms"] <= AIMS["overhead_p50_ms"]
                         and line.get("mismatches") == 0),
        "detection_lag_p50": (lag.get("p50_ms") is not None
                              and lag["p50_ms"] <= AIMS["detection_lag_ms"]
                              and not lag.get("failures")),
        "detection_lag_p95": (lag.get("p95_ms") is not None
                              and lag["p95_ms"] <= AIMS["detection_lag_ms"]
                              and not lag.get("failures")),
        "memory_per_session": (memory.get("per_session_mb") is not None
                               and memory["per_session_mb"] <= AIMS["memory_per_session_mb"]),
    }
    doc = {
        "benchmark": "turn",
        "quick": args.quick,
        "machine": machine(),
        "line_tool": line,
        "demo_detection_lag": lag,
        "memory": memory,
        "aims": {
            "overhead_p50_ms": f"<= {AIMS['overhead_p50_ms']}",
            "detection_lag_p50_ms": f"<= {AIMS['detection_lag_ms']}",
            "detection_lag_p95_ms": f"<= {AIMS['detection_lag_ms']}",
            "memory_per_session_mb": f"<= {AIMS['memory_per_session_mb']}",
        },
        "met": met,
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    print(json.dumps(doc, indent=2))
    log(f"done in {doc['elapsed_s']} s; met: {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
