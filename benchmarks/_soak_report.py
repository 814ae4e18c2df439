"""The figures of ``benchmarks/soak.py``: the accounting of the clients' prompts, reply
latency by window, the sections of the JSON document built from what the run recorded, what
the daemon's store and log say, and the aims.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _soak_cluster import RssSampler, rnd, states
from _soak_faults import FloodRun, StalledWatcher
from turn import percentile

AIMS = {
    "prompts_lost": 0,  # no prompt without an answer or a named error
    "daemon_peak_rss_mb": 150.0,  # both daemon lives
    "flood_p95_ratio": 1.5,  # p95 reply time during the flood / before it
    "processes_left": 0,  # after `cluster down`
}

#: The store's events that daemon_history reads, over both daemon lives.
EVENT_KINDS = ["prompt_queued", "prompt_finished", "instance_restarting", "process_exited",
               "orphan_killed", "turn_failed", "turn_retried", "instance_fatal",
               "daemon_started", "daemon_stopped"]


def summary(latencies: list[float]) -> dict[str, Any]:
    # Not turn.summary_ms: it rounds to 0.1 us first, and rounding twice would move some of
    # these figures by 0.1 ms.
    values = sorted(v * 1000.0 for v in latencies)
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50_ms": rnd(percentile(values, 50), 1),
            "p95_ms": rnd(percentile(values, 95), 1), "p99_ms": rnd(percentile(values, 99), 1),
            "max_ms": rnd(values[-1], 1), "mean_ms": rnd(sum(values) / len(values), 1)}


# -- the clients' prompts ---------------------------------------------------------------------------


def account(results: list[dict[str, Any]], windows: dict[str, tuple[float, float] | None],
            t0: float) -> dict[str, Any]:
    sent = answered = failed = lost = mismatched = 0
    failed_by: Counter[str] = Counter()
    lost_by: Counter[str] = Counter()
    not_sent_by: Counter[str] = Counter()
    answered_by: Counter[str] = Counter()
    latencies: list[float] = []
    by_window: dict[str, list[float]] = {k: [] for k in windows}
    per_client = []
    for res in results:
        recs = res.get("records", [])
        c_sent = len(recs)
        c_ans = sum(1 for r in recs if r["outcome"] == "answered")
        c_fail = sum(1 for r in recs if r["outcome"] == "failed")
        c_lost = sum(1 for r in recs if r["outcome"] in ("lost", None))
        gaps = [when for when, _code in res.get("not_sent", [])]
        for _when, code in res.get("not_sent", []):
            not_sent_by[code] += 1
        per_client.append({"name": res.get("name"), "sent": c_sent, "answered": c_ans,
                           "failed": c_fail, "lost": c_lost, "not_sent": len(gaps),
                           "not_sent_between_s": ([rnd(min(gaps) - t0, 1), rnd(max(gaps) - t0, 1)]
                                                  if gaps else None),
                           "connections": res.get("connects"), "error": res.get("error")})
        sent += c_sent
        answered += c_ans
        failed += c_fail
        lost += c_lost
        for r in recs:
            if r["outcome"] == "answered":
                answered_by[str(r.get("status"))] += 1
                if not r.get("match"):
                    mismatched += 1
                latencies.append(r["latency"])
                for key, win in windows.items():
                    if win is not None and win[0] <= r["sent"] < win[1]:
                        by_window[key].append(r["latency"])
            elif r["outcome"] == "failed":
                failed_by[str(r.get("code"))] += 1
            else:
                lost_by[str(r.get("code") or "no_reply_by_end")] += 1
    return {
        "sent": sent, "answered": answered, "failed": failed, "lost": lost,
        "balanced": sent == answered + failed + lost,
        "failed_by_code": dict(failed_by), "lost_by_reason": dict(lost_by),
        "not_sent": sum(not_sent_by.values()), "not_sent_by_code": dict(not_sent_by),
        "answered_by_turn_status": dict(answered_by), "answered_reply_mismatch": mismatched,
        "per_client": per_client,
        "_latencies": latencies, "_by_window": by_window,
    }



def prompt_figures(results: list[dict[str, Any]], windows: dict[str, tuple[float, float] | None],
                   t0: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``prompts`` and ``reply_latency`` sections; times relative to ``t0``."""
    acc = account(results, windows, t0)
    lat_all = acc.pop("_latencies")
    by_window = acc.pop("_by_window")
    lat: dict[str, Any] = {"all_answered": summary(lat_all)}
    for key, values in by_window.items():
        lat[key] = summary(values)
    b95, d95 = lat["before_flood"].get("p95_ms"), lat["during_flood"].get("p95_ms")
    b50, d50 = lat["before_flood"].get("p50_ms"), lat["during_flood"].get("p50_ms")
    lat["flood_p95_ratio"] = rnd(d95 / b95, 3) if b95 and d95 else None
    lat["flood_p50_ratio"] = rnd(d50 / b50, 3) if b50 and d50 else None
    lat["windows_s"] = {key: ([rnd(win[0] - t0, 1), rnd(win[1] - t0, 1)] if win else None)
                        for key, win in windows.items()}
    return acc, lat


# -- what else the run recorded ------------------------------------------------------------------


def flood_figures(floods: list[FloodRun], instances: int, seconds: float, rate_mb: float,
                  t0: float) -> dict[str, Any]:
    return {"instances": instances, "seconds": seconds, "rate_limit_mb_s": rate_mb or None,
            "runs": [{k: (rnd(v - t0, 2) if k in ("start", "end") else v)
                      for k, v in r.result.items()} for r in floods]}


def kill_figures(kills: list[dict[str, Any]], t0: float) -> dict[str, Any]:
    restarted = [k for k in kills if k.get("restarted_after_s") is not None]
    return {
        "killed": len(kills), "restarted": len(restarted),
        "max_restart_s": max((k["restarted_after_s"] for k in restarted), default=None),
        "kills": [{**{k: v for k, v in rec.items() if k != "at"},
                   "t_s": rnd(rec["at"] - t0, 1)} for rec in kills]}


def final_status(status: dict[str, Any]) -> dict[str, Any]:
    return {"states": states(status),
            "restarts_this_life": sum(r.get("restarts") or 0 for r in status["instances"]),
            "fatal": [r["id"] for r in status["instances"] if r["state"] == "fatal"],
            "queued": status.get("queued")}


def daemon_figures(sampler: RssSampler, watcher: StalledWatcher, t_ref: float,
                   windows: dict[str, tuple[float, float] | None]) -> dict[str, Any]:
    """The ``daemon`` section: RSS over both lives, CPU in the flood windows, the watcher."""
    lives = sorted({s[1] for s in sampler.samples})
    before, during = windows["before_flood"], windows["during_flood"]
    return {
        "peak_rss_mb": rnd(sampler.peak(), 1),
        "peak_rss_mb_by_life": {str(life): rnd(sampler.peak(life), 1) for life in lives},
        "rss_samples": len(sampler.samples),
        "rss_mb_every_5s": [[rnd(s[0] - t_ref, 1), s[1], rnd(s[2], 1)]
                            for s in sampler.samples[::10]],
        "cpu_pct_of_core": {
            "before_flood": rnd(sampler.cpu_pct(*before), 1) if before else None,
            "during_flood": rnd(sampler.cpu_pct(*during), 1) if during else None},
        "stalled_watcher": {"instance": watcher.instance,
                            "opens": [{k: (rnd(v - t_ref, 1) if k == "at" else v)
                                       for k, v in o.items()} for o in watcher.opens],
                            "closed_early": watcher.closed_early},
    }


# -- what the daemon recorded -----------------------------------------------------------------------


def daemon_history(socket_path: Path) -> dict[str, Any]:
    """What the store recorded over both daemon lives (the ``events`` op, not following)."""
    from aimterm.ipc.client import ControlClient

    kinds: Counter[str] = Counter()
    finished: Counter[str] = Counter()
    finished_clients: Counter[str] = Counter()  # of the clients' prompts (``soak c<k> n<i>``)
    queued: dict[int, str] = {}
    done: set[int] = set()
    restarting_reasons: Counter[str] = Counter()
    with ControlClient(str(socket_path), timeout=30) as client:
        for ev in client.open_stream("events", {"kinds": EVENT_KINDS}, timeout=60):
            kind = ev.get("kind")
            kinds[kind] += 1
            if kind == "prompt_queued":
                queued[ev["seq"]] = str(ev.get("prompt") or "")
            elif kind == "prompt_finished":
                status = ev.get("status")
                key = f"{status}:{ev['code']}" if ev.get("code") else str(status)
                finished[key] += 1
                if queued.get(ev.get("request"), "").startswith("soak "):
                    finished_clients[key] += 1
                done.add(ev.get("request"))
            elif kind == "instance_restarting":
                restarting_reasons[str(ev.get("reason"))] += 1
    return {"events": dict(kinds), "prompt_finished": dict(finished),
            "prompt_finished_of_clients": dict(finished_clients),
            "prompts_queued_of_clients": sum(1 for p in queued.values()
                                             if p.startswith("soak ")),
            "prompts_without_outcome": len(set(queued) - done),
            "instance_restarting_reasons": dict(restarting_reasons)}


def scan_log(path: Path) -> dict[str, Any]:
    """Tracebacks and error lines in daemon.log."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return {"error": repr(exc)}
    lines = text.splitlines()
    tracebacks = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            j = i + 1
            while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
                j += 1
            context = lines[i - 1] if i > 0 else ""
            tracebacks.append({"after": context[:300],
                               "exception": lines[j][:300] if j < len(lines) else ""})
    distinct: dict[str, dict[str, Any]] = {}
    for tb in tracebacks:
        entry = distinct.setdefault(tb["exception"], {"count": 0, "example_context": tb["after"]})
        entry["count"] += 1
    errors = [ln for ln in lines if " ERROR " in ln or " CRITICAL " in ln]
    warnings = [ln for ln in lines if " WARNING " in ln]
    return {"bytes": len(text), "tracebacks": len(tracebacks),
            "distinct_tracebacks": [{"exception": k, **v} for k, v in distinct.items()][:10],
            "error_lines": len(errors), "error_examples": [e[:300] for e in errors[:5]],
            "warning_lines": len(warnings),
            "warning_examples": [w[:300] for w in dict.fromkeys(
                re.sub(r"^\S+ \S+ ", "", w) for w in warnings)][:5]}


def history_figures(socket_path: Path, prompts: dict[str, Any]) -> dict[str, Any]:
    """The ``daemon_history`` section, with the daemon's count of the clients' prompts beside
    theirs; an error in its place if the store could not be read."""
    try:
        hist = daemon_history(socket_path)
        finished = hist["prompt_finished_of_clients"]
        hist["vs_clients"] = {
            "clients_sent": prompts["sent"],
            "daemon_queued": hist["prompts_queued_of_clients"],
            "clients_answered": prompts["answered"],
            "daemon_done": finished.get("done", 0),
            "clients_connection_lost": prompts["failed_by_code"].get("connection_lost", 0),
            "daemon_lost_in_crash": finished.get("lost", 0),
        }
        return hist
    except Exception as exc:  # noqa: BLE001 - reported
        return {"error": repr(exc)}


# -- aims -------------------------------------------------------------------------------------------


def judge(doc: dict[str, Any]) -> dict[str, Any]:
    aims: dict[str, Any] = {}

    def put(key: str, aim: str, value: Any, ok: Callable[[Any], bool]) -> None:
        aims[key] = {"aim": aim, "value": value,
                     "met": False if value is None else bool(ok(value))}

    prompts = doc.get("prompts") or {}
    put("prompts_lost", "0 (every prompt sent gets an answer or a named error)",
        prompts.get("lost"), lambda v: v <= AIMS["prompts_lost"])
    put("daemon_peak_rss_mb", f"< {AIMS['daemon_peak_rss_mb']:g} MB (both daemon lives)",
        (doc.get("daemon") or {}).get("peak_rss_mb"),
        lambda v: v < AIMS["daemon_peak_rss_mb"])
    put("flood_p95_ratio", f"<= {AIMS['flood_p95_ratio']:g} (p95 reply time of the demo "
        "instances during the flood / before it)",
        (doc.get("reply_latency") or {}).get("flood_p95_ratio"),
        lambda v: v <= AIMS["flood_p95_ratio"])
    put("processes_left", "0 after cluster down", (doc.get("shutdown") or {}).get(
        "processes_left"), lambda v: v <= AIMS["processes_left"])
    kills = doc.get("instance_kills") or {}
    put("killed_instances_restarted", "every instance killed runs again (new pid) within 30 s",
        (f"{kills['restarted']}/{kills['killed']}" if kills else None),
        lambda v: kills["restarted"] == kills["killed"])
    put("daemon_log_tracebacks", "0 tracebacks in <state>/daemon.log",
        (doc.get("daemon_log") or {}).get("tracebacks"), lambda v: v == 0)
    return aims


def headline(doc: dict[str, Any]) -> dict[str, Any]:
    """The figures asked for, in one place (each also appears in its section)."""
    prompts = doc.get("prompts") or {}
    lat = doc.get("reply_latency") or {}
    kills = doc.get("instance_kills") or {}
    hist = doc.get("daemon_history") or {}
    return {
        "prompts_sent": prompts.get("sent"), "answered": prompts.get("answered"),
        "failed": prompts.get("failed"), "failed_by_code": prompts.get("failed_by_code"),
        "lost": prompts.get("lost"), "not_sent": prompts.get("not_sent"),
        "daemon_peak_rss_mb": (doc.get("daemon") or {}).get("peak_rss_mb"),
        "p95_ms_before_flood": (lat.get("before_flood") or {}).get("p95_ms"),
        "p95_ms_during_flood": (lat.get("during_flood") or {}).get("p95_ms"),
        "flood_p95_ratio": lat.get("flood_p95_ratio"),
        "instance_kills": kills.get("killed"), "restarts_observed": kills.get("restarted"),
        "instance_restarting_events": (hist.get("events") or {}).get("instance_restarting"),
        "daemon_restart_s": (doc.get("daemon_kill") or {}).get("down_to_ready_s"),
        "processes_left": (doc.get("shutdown") or {}).get("processes_left"),
    }

