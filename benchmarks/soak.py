#!/usr/bin/env python3
"""Soak test of the aimterm daemon: a fleet of demo instances under a steady stream of prompts
from several client processes, with an output flood, a stalled attach watcher, instance kills
and a daemon kill -9 with crash recovery, for a bounded time.

Run from the repository root::

    python benchmarks/soak.py [--quick] [--instances 100] [--seconds 180] [--clients 4]

Prints one JSON document to stdout; progress goes to stderr. Everything runs on one machine
over the daemon's private Unix socket, in a temporary state dir, and stops by itself. See
benchmarks/README.md for what each figure means and how prompts are accounted for.

The aims are reported, not asserted: the exit status is 0 when the run went to the end, met or
missed, 1 when the run itself broke (the document has ``error``) and 130 when it was
interrupted (Ctrl-C or SIGTERM; ``interrupted``).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _soak_clients import Clients, client_child  # noqa: E402
from _soak_cluster import (  # noqa: E402
    FLOOD_ADAPTER,
    QUEUE_TIMEOUT_S,
    REPLY_TIMEOUT_S,
    TURN_TIMEOUT_S,
    Cluster,
    Ctl,
    RssSampler,
    log,
    rnd,
    shutdown,
    states,
    wait_ready,
)
from _soak_faults import (  # noqa: E402
    FloodRun,
    StalledWatcher,
    await_restarts,
    daemon_kill,
    kill_instances,
)
from _soak_report import (  # noqa: E402
    daemon_figures,
    final_status,
    flood_figures,
    headline,
    history_figures,
    judge,
    kill_figures,
    prompt_figures,
    scan_log,
)
from turn import machine  # noqa: E402

#: Phase times, as fractions of the load period (--seconds).
BEFORE_WINDOW = (0.10, 0.30)  # baseline for the flood comparison
FLOOD_AT = 0.30
FLOOD_FRACTION = 0.20  # the flood lasts this much of the run
DAEMON_KILL_AT = 0.60
INSTANCE_KILLS_AT = (0.20, 0.40, 0.75, 0.90)  # one in the baseline, one in the flood


def phase_windows(marks: dict[str, float], T: float) -> dict[str, tuple[float, float] | None]:
    """The latency windows (monotonic): the baseline before the flood, the flood from its
    start until its turns returned, and from the daemon's restart to the end of the load."""
    t0 = marks.get("load_start", 0.0)
    return {"before_flood": (t0 + BEFORE_WINDOW[0] * T, t0 + BEFORE_WINDOW[1] * T),
            "during_flood": ((marks["flood_start"], marks["flood_end"])
                             if "flood_end" in marks else None),
            "after_daemon_restart": ((marks["daemon_ready"], t0 + T)
                                     if "daemon_ready" in marks else None)}


def run_soak(args: argparse.Namespace, doc: dict[str, Any]) -> None:  # noqa: C901 - one story
    T = args.seconds
    cluster = Cluster(args.instances, args.flood_instances, args.think, args.flood_rate_mb)
    doc["state_dir"] = str(cluster.state)
    ctl = Ctl(cluster.socket)
    watcher = StalledWatcher(cluster.socket, "soakflood-1")
    sampler = RssSampler(0.5, args.rss_abort_mb,
                         on_abort=lambda mb: watcher.close(f"daemon RSS {mb:.0f} MB > "
                                                           f"--rss-abort-mb"))
    clients: Clients | None = None
    floods: list[FloodRun] = []
    checkers: list[threading.Thread] = []
    kills: list[dict[str, Any]] = []
    rng = random.Random(args.seed)
    marks: dict[str, float] = {}
    try:
        log(f"cluster up: {args.instances} demo + {args.flood_instances} flood instances in "
            f"{cluster.state}")
        first = cluster.up()
        doc["cluster_up"] = first
        if first["exit"] != 0:
            raise RuntimeError(f"cluster up failed: {first}")
        status = wait_ready(ctl, 120)
        cluster.daemon_pids.append(status["daemon"]["pid"])
        doc["cluster_up"]["states"] = states(status)
        log(f"  up in {first['wall_s']} s: {states(status)}")
        sampler.follow(status["daemon"]["pid"], 1)
        sampler.start()

        t0 = time.monotonic() + 5.0  # the clients import aimterm meanwhile
        stop_at = t0 + T
        marks["load_start"] = t0
        clients = Clients(cluster.root, cluster.socket, args.clients, args.rate, t0, stop_at)
        log(f"{args.clients} client processes, {args.rate:g} prompts/s in all, for {T:g} s")
        watcher.open(1)
        log(f"stalled watcher on {watcher.instance}: {watcher.opens[-1]}")

        plan: list[tuple[float, str]] = [(t0 + f * T, "kill") for f in INSTANCE_KILLS_AT]
        plan += [(t0 + FLOOD_AT * T, "flood"), (t0 + DAEMON_KILL_AT * T, "daemon")]
        plan.sort()
        flood_s = max(FLOOD_FRACTION * T, 1.0)
        for at, action in plan:
            while time.monotonic() < at:
                time.sleep(min(at - time.monotonic(), 0.5))
            rel = time.monotonic() - t0
            if action == "kill":
                batch = kill_instances(ctl, args.kill_count, rng)
                kills += batch
                log(f"t={rel:.1f}s kill -9 {[(k['id'], k['pid'], k['state']) for k in batch]}")
                th = threading.Thread(target=await_restarts, args=(ctl, batch), daemon=True)
                th.start()
                checkers.append(th)
            elif action == "flood":
                marks["flood_start"] = time.monotonic()
                log(f"t={rel:.1f}s flood: {args.flood_instances} instance(s) for {flood_s:g} s")
                for k in range(args.flood_instances):
                    run = FloodRun(cluster.socket, f"{FLOOD_ADAPTER}-{k + 1}", flood_s)
                    run.start()
                    floods.append(run)
            elif action == "daemon":
                for run in floods:  # the flood ends before the daemon is killed
                    run.join(max(marks["flood_start"] + flood_s + 120 - time.monotonic(), 1))
                marks["flood_end"] = max((r.result.get("end", 0.0) for r in floods),
                                         default=time.monotonic())
                doc["daemon_kill"] = daemon_kill(cluster, ctl, sampler, watcher, t0, marks)
        remaining = stop_at - time.monotonic()
        log(f"load runs {max(remaining, 0):.0f} s more; then the clients drain")
        codes = clients.join(max(remaining, 0) + REPLY_TIMEOUT_S + 30)
        marks["clients_done"] = time.monotonic()
        for th in checkers:
            th.join(35)
        results = clients.results()
        doc["client_exit_codes"] = codes

        windows = phase_windows(marks, T)
        doc["prompts"], doc["reply_latency"] = prompt_figures(results, windows, t0)
        doc["flood"] = flood_figures(floods, args.flood_instances, flood_s, args.flood_rate_mb,
                                     t0)
        doc["instance_kills"] = kill_figures(kills, t0)
        doc["final_status"] = final_status(ctl.call("status", retry_s=10))
        doc["daemon_history"] = history_figures(cluster.socket, doc["prompts"])
    finally:
        # Cleanup is bounded by its own timeouts; a second Ctrl-C must not cut it short.
        previous = {sig: signal.signal(sig, signal.SIG_IGN)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        sampler_done = sampler.is_alive()
        watcher.close()
        if clients is not None:
            clients.kill()
        ctl.drop()
        doc["shutdown"] = shutdown(cluster)
        if sampler_done:
            sampler.stop()
        doc["daemon_log"] = scan_log(cluster.log_path)
        if args.keep:
            doc["kept"] = str(cluster.root)
        else:
            shutil.rmtree(cluster.root, ignore_errors=True)
        t_ref = marks.get("load_start", 0.0)
        doc["daemon"] = daemon_figures(sampler, watcher, t_ref, phase_windows(marks, T))
        doc["timeline_s"] = {k: rnd(v - t_ref, 1) for k, v in marks.items()}
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="12 instances for 45 s (unless --instances/--seconds say otherwise)")
    p.add_argument("--instances", type=int, default=None, help="demo instances (default 100)")
    p.add_argument("--seconds", type=float, default=None,
                   help="length of the load period (default 180)")
    p.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    p.add_argument("--rate", type=float, default=None,
                   help="prompts per second, all clients together (default 8, --quick 4)")
    p.add_argument("--flood-instances", type=int, default=None,
                   help="instances of the flooding tool (default 2, --quick 1)")
    p.add_argument("--flood-rate-mb", type=float, default=0.0,
                   help="cap on each flood's output in MB/s (default 0: as fast as it is read)")
    p.add_argument("--kill-count", type=int, default=None,
                   help="instances killed at each kill (default 3, --quick 2)")
    p.add_argument("--think", type=float, default=0.3, help="demo agent think time (s)")
    p.add_argument("--rss-abort-mb", type=float, default=4000.0,
                   help="close the stalled watcher if the daemon's RSS passes this (safety)")
    p.add_argument("--seed", type=int, default=1, help="seed for choosing what to kill")
    p.add_argument("--keep", action="store_true", help="keep the temporary state dir")
    p.add_argument("--client-child", metavar="CFG", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client_child:
        return client_child(args.client_child)
    q = args.quick
    args.instances = args.instances if args.instances is not None else (12 if q else 100)
    args.seconds = args.seconds if args.seconds is not None else (45.0 if q else 180.0)
    args.rate = args.rate if args.rate is not None else (4.0 if q else 8.0)
    args.flood_instances = (args.flood_instances if args.flood_instances is not None
                            else (1 if q else 2))
    args.kill_count = args.kill_count if args.kill_count is not None else (2 if q else 3)
    if (args.instances < 1 or args.seconds < 10 or args.clients < 1 or args.rate <= 0
            or args.flood_instances < 1 or args.kill_count < 0):
        p.error("need --instances >= 1, --seconds >= 10, --clients >= 1, --rate > 0, "
                "--flood-instances >= 1")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    doc: dict[str, Any] = {
        "benchmark": "soak", "quick": q, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "config": {"instances": args.instances, "flood_instances": args.flood_instances,
                   "clients": args.clients, "rate_per_s": args.rate, "seconds": args.seconds,
                   "think_s": args.think, "kill_count": args.kill_count,
                   "queue_timeout_s": QUEUE_TIMEOUT_S, "turn_timeout_s": TURN_TIMEOUT_S,
                   "reply_timeout_s": REPLY_TIMEOUT_S, "seed": args.seed},
    }
    try:
        run_soak(args, doc)
    except KeyboardInterrupt as exc:
        doc["interrupted"] = str(exc) or "KeyboardInterrupt"
        log("interrupted; everything it started has been stopped")
    except Exception as exc:  # noqa: BLE001 - reported in the document
        doc["error"] = repr(exc)
        log(f"failed: {exc!r}")
    aims = judge(doc)
    doc["summary"] = headline(doc)
    doc["aims"] = aims
    doc["met"] = {k: v["met"] for k, v in aims.items()}
    doc["elapsed_s"] = rnd(time.monotonic() - started, 1)
    print(json.dumps(doc, indent=2))
    log(f"done in {doc['elapsed_s']} s; missed: "
        f"{[k for k, v in doc['met'].items() if not v] or 'none'}")
    if "error" in doc:
        return 1
    return 130 if "interrupted" in doc else 0


if __name__ == "__main__":
    sys.exit(main())
