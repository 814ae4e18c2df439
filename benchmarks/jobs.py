#!/usr/bin/env python3
"""Jobs benchmark for aimterm: a batch of jobs pooled on running instances, against the same
jobs one-shot, one after another and side by side, measured in the same run.

Every job creates its own file in a temporary git repository and is checked by an acceptance
command (``grep -qx TOKEN FILE``); a benchmark of failing jobs measures nothing, so any job
that fails is reported under ``failures`` and the exit status is 1. Each job has the same
model time (``--think``): on the demo agent through its think time, on a real agent CLI
(aider, Claude Code) through the fake model server's delay. Scenarios, per agent:

* ``a_sequential_oneshot``: the jobs one after another, one-shot (``JobAdapter.run_job``);
* ``c_parallel_oneshot``: the same, all at once (``Orchestrator.execute_jobs(mode="oneshot")``);
* ``b_pooled_cold``: pooled on as many instances as jobs, the instances starting meanwhile;
* ``b_pooled_warm``: the same again on the now running instances (the headline);
* ``pooled_warm_sequential``: one job at a time on the warm pool, for the per-job costs;
* ``scale_*``: more jobs (8) on fewer instances (4), pooled warm against sequential one-shot.

The start-up of a job run on its own is the time from handing it over until the tool starts
on it: on a real CLI its first request arriving at the fake model server, on the demo agent
its first "busy" line in the demo agent's trace (``AIMTERM_DEMO_TRACE``).

Run from the repository root::

    python benchmarks/jobs.py [--quick] [--think S] [--cli aider,claude|auto|none]

One JSON document on stdout, progress on stderr. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from turn import machine  # noqa: E402

AIMS = {
    "pooled_vs_sequential_oneshot": 2.9,  # (a) / (b), warm pool, 3 jobs on 3 instances
    "startup_saving": 0.8,  # 1 - pooled start-up / one-shot start-up (hand-over to work)
    "scale_per_instance": 0.95,  # scale: sequential one-shot / pooled >= this x instances
}
#: The real agent CLIs this benchmark knows how to script against the fake model.
CLIS = ("aider", "claude")

#: Lines of a failed job's screen (or output) the document keeps.
SCREEN_LINES = 25

_QUIET = False


def log(message: str) -> None:
    if not _QUIET:
        print(f"[jobs-bench] {message}", file=sys.stderr, flush=True)


def rnd(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def minus(a: float | None, b: float) -> float | None:
    return None if a is None else a - b


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else round(a / b, 3)


# -- the agents ------------------------------------------------------------------------------------


class Agent:
    """What a scenario needs from an agent: jobs for it (each job a new file with a token of
    its own, the acceptance command checking it), and the model time each job had."""

    name = ""
    tool = ""

    def __init__(self, root: Path, think: float) -> None:
        self.root = root
        self.think = think
        self.repo = root / "repo"
        self._git_env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="b@b",
                             GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="b@b")
        self.repo.mkdir(parents=True)
        (self.repo / "README").write_text("jobs benchmark\n")
        for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "start"]):
            subprocess.run(["git", *args], cwd=self.repo, env=self._git_env, check=True,
                           timeout=30, capture_output=True)

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"tool": self.tool}

    def jobs(self, scenario: str, n: int, mode: str) -> list[Any]:
        from aimterm.jobs import jobs_from_data

        return jobs_from_data([self.job(scenario, i, mode) for i in range(n)])

    def job(self, scenario: str, i: int, mode: str) -> dict[str, Any]:
        raise NotImplementedError

    def timeout_s(self) -> float:
        return max(30.0, 10 * self.think)

    def mark(self) -> Any:
        """Taken before a scenario; :meth:`model_calls` counts what happened since."""
        return None

    def model_calls(self, mark: Any, jobs: Sequence[Any]) -> list[int] | None:
        """Model calls each job made since ``mark`` (None when the agent cannot tell)."""
        return None

    def phases(self, mark: Any, jobs: Sequence[Any], spans: Sequence[tuple[float, float]]
               ) -> dict[str, Any] | None:
        """Where each job's time went around its model calls (None when the agent cannot
        tell)."""
        return None

    def first_work(self, mark: Any, job: Any, after: float) -> float | None:
        """When the tool started working on ``job`` (``time.monotonic()``), or None."""
        return None

    #: What :meth:`first_work` is, for the document.
    STARTUP_HOW = ""

    def model_time(self, calls: list[int] | None) -> float:
        """The model time one job had (the same for every job by construction)."""
        return self.think


class DemoAgent(Agent):
    """The bundled demo agent. For an edit it thinks twice, in either form: the full-screen
    form before it asks to apply the edit and after the answer, the ``-p`` form before and
    after writing the file. Every job gets ``AIMTERM_DEMO_THINK = think / 2``, so ``think``
    seconds of model time whichever way it runs. ``AIMTERM_DEMO_TRACE`` makes both forms
    append a line (``t`` monotonic, ``state``) each time they draw (full-screen) or start and
    stop thinking (``-p``): the first ``busy`` line after a job is handed over is when the tool
    starts on it."""

    name = tool = "demo"
    THINKS_PER_JOB = 2
    STARTUP_HOW = ("start-up: the job handed over to the tool's first busy trace line "
                   "(AIMTERM_DEMO_TRACE: -p writes one as it starts thinking, the full-screen "
                   "form one per frame drawn)")

    def __init__(self, root: Path, think: float) -> None:
        super().__init__(root, think)
        self.home = root / "demo-home"
        self.home.mkdir()
        self.trace = root / "demo-trace.jsonl"

    def describe(self) -> dict[str, Any]:
        return {"tool": self.tool, "model_time_per_job_s": self.think,
                "think_env": {"AIMTERM_DEMO_THINK": self.think / self.THINKS_PER_JOB},
                "why": "an edit makes the demo agent think twice in both forms (full-screen: "
                       "before asking to apply it and after the answer; -p: before and after "
                       "writing the file)"}

    def job(self, scenario: str, i: int, mode: str) -> dict[str, Any]:
        name, token = f"{scenario}-{i}.txt", f"token-{scenario}-{i}"
        return {"id": f"{scenario}-{i}", "tool": self.tool, "cwd": str(self.repo),
                "files": [name], "prompt": f"edit {name}: {token}",
                "acceptance": [f"grep -qx {token} {name}"], "timeout_s": self.timeout_s(),
                "env": {"AIMTERM_DEMO_THINK": f"{self.think / self.THINKS_PER_JOB:g}",
                        "AIMTERM_DEMO_HOME": str(self.home),
                        "AIMTERM_DEMO_TRACE": str(self.trace)}}

    def first_work(self, mark: Any, job: Any, after: float) -> float | None:
        """The first ``busy`` line of the trace after ``after`` (only meaningful when one job
        runs at a time: the lines do not say whose they are)."""
        try:
            lines = self.trace.read_text(encoding="utf-8").splitlines()
        except OSError:
            return None
        times = []
        for line in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                rec = json.loads(line)
                if rec["state"] == "busy" and rec["t"] >= after:
                    times.append(float(rec["t"]))
        return min(times) if times else None


class CliAgent(Agent):
    """A real agent CLI, offline, against :class:`~aimterm.testing.FakeModel`: each job's
    prompt makes the model edit the job's file (how, :meth:`script` says); each model call is
    delayed ``think / CALLS_PER_JOB`` by the server (``think_s``). The calls each job really
    made are counted and reported, and the first one is when the tool started on the job."""

    CALLS_PER_JOB = 2
    STARTUP_HOW = ("start-up: the job handed over to its first model request arriving at the "
                   "fake model server")

    def __init__(self, root: Path, think: float, cli: str, path: str) -> None:
        super().__init__(root, think)
        self.name = self.tool = cli
        self.path = path
        self.think_s = think / self.CALLS_PER_JOB
        self.model: Any = None
        self.env: dict[str, str] = {}
        self._prompts: dict[str, str] = {}  # prompt -> job id

    def make_model(self) -> Any:
        from aimterm.testing import FakeModel

        return FakeModel(think_s=self.think_s)

    def start(self) -> None:
        from aimterm.testing.offline import CLAUDE_FOREIGN_ENV, offline_env

        for key in CLAUDE_FOREIGN_ENV:  # the caller's own Claude settings must not leak in
            os.environ.pop(key, None)
        self.model = self.make_model().start()
        self.env = offline_env(self.tool, self.root / f"{self.tool}-home", self.model.url)

    def close(self) -> None:
        if self.model is not None:
            self.model.stop()
            self.model = None

    def describe(self) -> dict[str, Any]:
        version = None
        try:
            out = subprocess.run([self.path, "--version"], capture_output=True, text=True,
                                 timeout=30, env={**os.environ, **self.env})
            lines = (out.stdout or out.stderr).strip().splitlines()
            version = lines[0] if lines else None
        except (OSError, subprocess.SubprocessError):
            pass
        return {"tool": self.tool, "path": self.path, "version": version,
                "model_time_per_job_s": self.think, "fake_model_think_s": self.think_s,
                "model_calls_per_job_expected": self.CALLS_PER_JOB}

    def job(self, scenario: str, i: int, mode: str) -> dict[str, Any]:
        name, token = f"{scenario}-{i}.txt", f"token-{scenario}-{i}"
        prompt = f"create the file {name} holding the line {token}"
        self._prompts[prompt] = f"{scenario}-{i}"
        self.model.prompts.append(prompt)
        self.script(prompt, name, token)
        return {"id": f"{scenario}-{i}", "tool": self.tool, "cwd": str(self.repo),
                "files": [name], "prompt": prompt, "acceptance": [f"grep -qx {token} {name}"],
                "timeout_s": self.timeout_s(), "env": dict(self.env)}

    def script(self, prompt: str, name: str, token: str) -> None:
        raise NotImplementedError

    def mark(self) -> Any:
        return len(self.model.requests)

    def model_calls(self, mark: Any, jobs: Sequence[Any]) -> list[int] | None:
        return [len(self._calls(mark, job)) for job in jobs]

    def _calls(self, mark: Any, job: Any) -> list[float]:
        """When the model calls of ``job`` since ``mark`` came in (``time.monotonic()``)."""
        return [rec.mono for rec in self.model.requests[mark:]
                if rec.endpoint in ("chat", "json")
                and self._prompts.get(rec.prompt or "") == job.id]

    def first_work(self, mark: Any, job: Any, after: float) -> float | None:
        calls = self._calls(mark, job)
        return min(calls) if calls else None

    def phases(self, mark: Any, jobs: Sequence[Any], spans: Sequence[tuple[float, float]]
               ) -> dict[str, Any] | None:
        """Where each job's time went around its model calls: ``lead_s`` from the job's start
        to its first model call (the tool starting, or the prompt being typed and submitted),
        ``tail_s`` from the last model answer to the job's end (the tool finishing or the
        instance seen idle, the reply read, the acceptance command). In a batch every job
        starts with the batch and its end is not timed: only ``lead_s``."""
        leads, tails = [], []
        for job, (start, end) in zip(jobs, spans, strict=True):
            calls = self._calls(mark, job)
            if not calls:
                continue
            leads.append(min(calls) - start)
            if end > start:
                tails.append(end - (max(calls) + self.think_s))
        out: dict[str, Any] = {"lead_s": [rnd(x) for x in leads]}
        if tails:
            out["tail_s"] = [rnd(x) for x in tails]
        return out

    def model_time(self, calls: list[int] | None) -> float:
        if not calls:
            return self.think
        return statistics.mean(calls) * self.think_s


class ClaudeAgent(CliAgent):
    """Claude Code: the model calls its edit tool (which creates the file), then answers the
    tool's result with text: two model calls per job."""

    CALLS_PER_JOB = 2

    def script(self, prompt: str, name: str, token: str) -> None:
        from aimterm.testing import ToolCall

        self.model.tool_calls[prompt] = ToolCall(kind="edit", path=str(self.repo / name),
                                                 content=token + "\n")


class AiderAgent(CliAgent):
    """aider: the model answers with the file in aider's "whole" edit format, which aider
    applies: one model call per job. aider edits files that are in its chat (pooled, the job
    recipe's ``/add``; one-shot, on its command line), so each scenario's files exist and are
    committed before its jobs run (``old``), as in tests/live/test_jobs_live.py."""

    CALLS_PER_JOB = 1

    def __init__(self, root: Path, think: float, cli: str, path: str) -> None:
        super().__init__(root, think, cli, path)
        self._replies: dict[str, str] = {}

    def make_model(self) -> Any:
        from aimterm.testing import FakeModel
        from aimterm.testing.fakemodel import default_reply

        return FakeModel(think_s=self.think_s,
                         reply=lambda prompt: self._replies.get(prompt) or default_reply(prompt))

    def script(self, prompt: str, name: str, token: str) -> None:
        self._replies[prompt] = f"Done.\n\n{name}\n```\n{token}\n```"
        (self.repo / name).write_text("old\n")

    def jobs(self, scenario: str, n: int, mode: str) -> list[Any]:
        out = super().jobs(scenario, n, mode)
        for args in (["add", "-A"], ["commit", "-qm", scenario]):
            subprocess.run(["git", *args], cwd=self.repo, env=self._git_env, check=True,
                           timeout=30, capture_output=True)
        return out


CLI_AGENTS: dict[str, type[CliAgent]] = {"aider": AiderAgent, "claude": ClaudeAgent}


# -- the scenarios ---------------------------------------------------------------------------------


class Failures(list[dict[str, Any]]):
    """Every job that failed, with what its error report (the orchestrator's) or its reply (a
    one-shot run's output) says about why."""

    def note(self, agent: str, scenario: str, results: Sequence[Any]) -> None:
        for r in results:
            if r.success:
                continue
            entry: dict[str, Any] = {"agent": agent, "scenario": scenario, "job_id": r.job_id,
                                     "status": r.status.value, "error": r.error,
                                     "instance": r.instance, "attempts": r.attempts}
            try:
                with open(r.error_report_path or "", encoding="utf-8") as fh:
                    attempts = json.load(fh)["attempts"]
                entry["attempt_errors"] = [a.get("error") for a in attempts]
                screen = [line for line in attempts[-1].get("screen_tail", []) if line.strip()]
                entry["screen_tail"] = screen[-SCREEN_LINES:]
            except (OSError, ValueError, KeyError, IndexError, TypeError):
                entry["reply_tail"] = r.reply.splitlines()[-SCREEN_LINES:]
            self.append(entry)


def job_rows(results: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"job_id": r.job_id, "status": r.status.value, "instance": r.instance,
             "attempts": r.attempts, "queued_s": r.duration_s.queued,
             "running_s": r.duration_s.running, "checking_s": r.duration_s.checking}
            for r in results]


Spans = list[tuple[float, float]]
Runner = Callable[[list[Any]], tuple[list[Any], Spans | None]]


class TurnLog:
    """The turns the pooled instances of an orchestrator started and finished, from their
    sessions' events. ``turn_started`` goes out as the prompt turn starts: once the prompt
    and its Enter are written when the adapter's submit recipe has no pauses, as the typing
    starts when it has (the demo agent's 30 ms before Enter); ``turn_finished`` carries
    ``submit_to_busy_ms``, from the Enter written to the session seeing the tool busy."""

    def __init__(self, orch: Any) -> None:
        self.started: list[tuple[float, str]] = []  # (mono, prompt)
        self.finished: dict[tuple[str, int], float | None] = {}
        self._numbers: dict[tuple[str, int], str] = {}
        self._unsubscribe = [cm.subscribe(self._on) for cm in orch.pools().values()]

    def _on(self, event: Any) -> None:
        if event.kind == "turn_started":
            self.started.append((event.mono, event.prompt))
            self._numbers[(event.instance, event.turn)] = event.prompt
        elif event.kind == "turn_finished":
            self.finished[(event.instance, event.turn)] = event.submit_to_busy_ms

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            with contextlib.suppress(Exception):
                unsubscribe()

    def prompt_started(self, job: Any) -> float | None:
        """When the job's prompt turn started (the recipe may add to the prompt)."""
        times = [mono for mono, prompt in self.started if job.prompt in prompt]
        return min(times) if times else None

    def submit_to_busy_ms(self, job: Any) -> float | None:
        for key, prompt in self._numbers.items():
            if job.prompt in prompt:
                value = self.finished.get(key)
                return None if value is None else round(value, 1)
        return None


def scenario(agent: Agent, failures: Failures, name: str, mode: str, n: int, run: Runner,
             instances: int | None = None, turns: TurnLog | None = None) -> dict[str, Any]:
    """Make ``n`` jobs and run them with ``run``, which gives back their results and, when it
    ran them one by one, when each started and ended (``time.monotonic()``, the clock the fake
    model stamps its requests with); time the whole. Jobs run one by one also get their
    start-up (hand-over to the tool's first work on the job), and with ``turns`` (pooled) its
    two parts, hand-over to the prompt turn's start and from there to the tool's first work."""
    jobs = agent.jobs(name, n, mode)
    mark = agent.mark()
    log(f"{agent.name}: {name}: {n} jobs, {mode}"
        + (f" on {instances} instances" if instances else ""))
    t0 = time.monotonic()
    results, spans = run(jobs)
    wall = time.monotonic() - t0
    failures.note(agent.name, name, results)
    calls = agent.model_calls(mark, jobs)
    ok = sum(r.success for r in results)
    log(f"  {wall:.2f} s, {ok}/{n} succeeded")
    out: dict[str, Any] = {"mode": mode, "jobs": n, "instances": instances,
                           "wall_s": rnd(wall), "succeeded": ok}
    if spans is not None:
        out["per_job_wall_s"] = [rnd(end - start) for start, end in spans]
    if calls is not None:
        out["model_calls_per_job"] = calls
    out["model_time_per_job_s"] = rnd(agent.model_time(calls))
    phases = agent.phases(mark, jobs, spans if spans is not None else [(t0, t0)] * n)
    if phases is not None:
        out["phases"] = phases
    if spans is not None:  # one job at a time: each job's start-up
        starts = [agent.first_work(mark, job, start) for job, (start, _) in zip(jobs, spans,
                                                                                strict=True)]
        out["startup_s"] = [rnd(None if w is None else w - start)
                            for w, (start, _) in zip(starts, spans, strict=True)]
        if turns is not None:
            submits = [turns.prompt_started(job) for job in jobs]
            out["prompt_to_work_s"] = [rnd(None if w is None or t is None else w - t)
                                       for w, t in zip(starts, submits, strict=True)]
            out["handover_to_prompt_s"] = [rnd(None if t is None else t - start)
                                           for t, (start, _) in zip(submits, spans,
                                                                    strict=True)]
            out["submit_to_busy_ms"] = [turns.submit_to_busy_ms(job) for job in jobs]
    out["results"] = job_rows(results)
    return out


def one_by_one(fn: Callable[[Any], Any]) -> Runner:
    def run(jobs: list[Any]) -> tuple[list[Any], Spans]:
        results, spans = [], []
        for job in jobs:
            start = time.monotonic()
            results.append(fn(job))
            spans.append((start, time.monotonic()))
        return results, spans
    return run


def batch(orch: Any, mode: str) -> Runner:
    def run(jobs: list[Any]) -> tuple[list[Any], None]:
        return orch.execute_jobs(jobs, mode=mode), None
    return run


def orchestrator(agent: Agent, instances: int) -> Any:
    from aimterm import Orchestrator

    # Its books (a store, error reports) go to the benchmark's temporary folder.
    return Orchestrator(instances_per_tool=instances, fleet=None,
                        max_oneshot=max(instances, 3), state_dir=agent.root / "state")


def median(values: Sequence[float | None] | None) -> float | None:
    known = [v for v in values or () if v is not None]
    return float(statistics.median(known)) if known else None


def overhead(s: dict[str, Any]) -> float | None:
    """Median per-job wall time minus the model time a job had."""
    walls = s.get("per_job_wall_s")
    if not walls:
        return None
    return float(statistics.median(walls)) - float(s["model_time_per_job_s"])


def bench_agent(agent: Agent, failures: Failures, *, jobs: int, scale_jobs: int,
                scale_instances: int, scale: bool) -> dict[str, Any]:
    from aimterm.jobs import JobAdapter

    sc: dict[str, dict[str, Any]] = {}
    one_shot = JobAdapter(agent.tool)
    # The one-shot peers first, while no pooled instance is alive to share the cores with.
    sc["a_sequential_oneshot"] = scenario(agent, failures, "a", "oneshot", jobs,
                                          one_by_one(one_shot.run_job))
    orch = orchestrator(agent, jobs)
    try:
        sc["c_parallel_oneshot"] = scenario(agent, failures, "c", "oneshot", jobs,
                                            batch(orch, "oneshot"))
    finally:
        orch.shutdown()
    orch = orchestrator(agent, jobs)
    try:
        sc["b_pooled_cold"] = scenario(agent, failures, "bcold", "pooled", jobs,
                                       batch(orch, "pooled"), jobs)
        sc["b_pooled_warm"] = scenario(agent, failures, "b", "pooled", jobs,
                                       batch(orch, "pooled"), jobs)
        turns = TurnLog(orch)
        try:
            sc["pooled_warm_sequential"] = scenario(
                agent, failures, "pseq", "pooled", jobs,
                one_by_one(lambda job: orch.execute_jobs([job], mode="pooled")[0]), jobs,
                turns=turns)
        finally:
            turns.close()
    finally:
        orch.shutdown()
    if scale:
        sc["scale_sequential_oneshot"] = scenario(agent, failures, "sseq", "oneshot",
                                                  scale_jobs, one_by_one(one_shot.run_job))
        orch = orchestrator(agent, scale_instances)
        try:
            sc["scale_pooled_cold"] = scenario(agent, failures, "scold", "pooled",
                                               scale_instances, batch(orch, "pooled"),
                                               scale_instances)
            sc["scale_pooled_warm"] = scenario(agent, failures, "s", "pooled", scale_jobs,
                                               batch(orch, "pooled"), scale_instances)
        finally:
            orch.shutdown()

    def wall(key: str) -> float | None:
        return sc[key]["wall_s"] if key in sc else None

    ratios = {
        "a_over_b": ratio(wall("a_sequential_oneshot"), wall("b_pooled_warm")),
        "a_over_b_cold": ratio(wall("a_sequential_oneshot"), wall("b_pooled_cold")),
        "a_over_c": ratio(wall("a_sequential_oneshot"), wall("c_parallel_oneshot")),
        "c_over_b": ratio(wall("c_parallel_oneshot"), wall("b_pooled_warm")),
        "scale": ratio(wall("scale_sequential_oneshot"), wall("scale_pooled_warm")),
    }
    o_one = overhead(sc["a_sequential_oneshot"])
    o_pool = overhead(sc["pooled_warm_sequential"])
    s_one = median(sc["a_sequential_oneshot"].get("startup_s"))
    s_pool = median(sc["pooled_warm_sequential"].get("startup_s"))
    saving = 1 - s_pool / s_one if s_one is not None and s_pool is not None and s_one > 0 \
        else None
    overhead_saving = 1 - o_pool / o_one if o_one is not None and o_pool is not None \
        and o_one > 0 else None
    # The same, with the jobs side by side (all instances or processes sharing the cores).
    model = float(sc["b_pooled_warm"]["model_time_per_job_s"])
    c_model = float(sc["c_parallel_oneshot"]["model_time_per_job_s"])
    seq = sc["pooled_warm_sequential"]
    startup: dict[str, Any] = {
        "oneshot_startup_s": rnd(s_one),
        "pooled_startup_s": rnd(s_pool),
        "saving": rnd(saving),
        "pooled_handover_to_prompt_s": rnd(median(seq.get("handover_to_prompt_s"))),
        "pooled_prompt_to_work_s": rnd(median(seq.get("prompt_to_work_s"))),
        "pooled_submit_to_busy_ms": rnd(median(seq.get("submit_to_busy_ms")), 1),
        "how": agent.STARTUP_HOW + "; medians, one-shot from a_sequential_oneshot (from the "
               "JobAdapter.run_job call), pooled from pooled_warm_sequential (from the "
               "execute_jobs([job]) call, one job at a time on a warm instance); saving = 1 - "
               "pooled / one-shot",
        "per_job_overhead": {
            "oneshot_s": rnd(o_one),
            "pooled_s": rnd(o_pool),
            "saving": rnd(overhead_saving),
            "how": "median per-job wall time minus the job's model time: start-up, the "
                   "prompt, the end of the turn seen (pooled: the instance idle again, and "
                   "the recipe's turns around the prompt) or the process exit, the "
                   "acceptance command",
        },
        "side_by_side": {
            "oneshot_batch_overhead_s": rnd(minus(wall("c_parallel_oneshot"), c_model)),
            "pooled_batch_overhead_s": rnd(minus(wall("b_pooled_warm"), model)),
            "how": "batch wall time minus the model time, c_parallel_oneshot and "
                   "b_pooled_warm (one job per process or instance)",
        },
    }
    split = {key: {part: rnd(float(statistics.median(values)))
                   for part, values in sc[key].get("phases", {}).items() if values}
             for key in ("a_sequential_oneshot", "pooled_warm_sequential",
                         "c_parallel_oneshot", "b_pooled_warm", "b_pooled_cold")
             if sc[key].get("phases")}
    if split:
        startup["phases_median_s"] = split
        startup["phases_how"] = ("lead_s: job start (batch start for a batch) to its first "
                                 "model call; tail_s: last model answer to the job's end")
    # The model time from which (a) / (b) would reach its aim, if the overheads measured here
    # stayed as they are: n (T + o_a) / (T + o_b) >= r  <=>  T >= (r o_b - n o_a) / (n - r).
    r, n = AIMS["pooled_vs_sequential_oneshot"], jobs
    o_b = minus(wall("b_pooled_warm"), model)
    if o_one is not None and o_b is not None and n > r:
        ratios["a_over_b_aim_met_from_think_s_estimate"] = rnd(max(0.0, (r * o_b - n * o_one)
                                                                   / (n - r)), 2)
    aims: dict[str, Any] = {
        "pooled_vs_sequential_oneshot": _aim(ratios["a_over_b"],
                                             AIMS["pooled_vs_sequential_oneshot"]),
        "startup_saving": _aim(rnd(saving), AIMS["startup_saving"]),
    }
    if scale:
        aims["scale_vs_sequential_oneshot"] = _aim(
            ratios["scale"], round(AIMS["scale_per_instance"] * scale_instances, 3))
        aims["scale_vs_sequential_oneshot"]["shape"] = f"{scale_jobs} jobs on " \
                                                        f"{scale_instances} instances"
    return {**agent.describe(), "scenarios": sc, "ratios": ratios, "startup": startup,
            "aims": aims}


def _aim(value: float | None, target: float) -> dict[str, Any]:
    return {"value": value, "target": f">= {target}",
            "met": value is not None and value >= target}


def run_agent(make: Callable[[], Agent], failures: Failures,
              **options: Any) -> dict[str, Any]:
    """One agent's part; an error is reported in its place and the other parts still run."""
    t0 = time.perf_counter()
    load = [round(x, 2) for x in os.getloadavg()]
    agent: Agent | None = None
    try:
        agent = make()
        agent.start()
        out = bench_agent(agent, failures, **options)
    except Exception as exc:  # noqa: BLE001 - report it and go on with the others
        log(f"failed: {exc!r}")
        out = {"error": repr(exc)}
    finally:
        if agent is not None:
            agent.close()
    out["load_avg_at_start"] = load
    out["elapsed_s"] = round(time.perf_counter() - t0, 2)
    return out


def cli_problem(cli: str) -> str | None:
    """Why the CLI part cannot run, or None."""
    from aimterm.adapter.registry import load_adapter
    from aimterm.testing.clis import find_cli

    if cli not in CLIS:
        return f"{cli!r} is not scripted by this benchmark (known: {', '.join(CLIS)})"
    if find_cli(cli) is None:
        return f"{cli} is not installed (scripts/install-agent-clis installs it)"
    if load_adapter(cli).jobs.oneshot is None:
        return f"the {cli} adapter has no job recipe (jobs.oneshot)"
    return None


def leftovers() -> list[str]:
    """Child processes still alive (killed here, by pid, after they are listed)."""
    import psutil

    found = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{p.pid} {' '.join(p.cmdline())[:200]}")
                p.kill()
    return found


def main(argv: list[str] | None = None) -> int:
    global _QUIET
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--think", type=float, default=None,
                   help="model time per job, in seconds (default 3, --quick 0.5)")
    p.add_argument("--jobs", type=int, default=3, help="jobs of the headline (default 3)")
    p.add_argument("--scale-jobs", type=int, default=None, help="default 8, --quick 4")
    p.add_argument("--scale-instances", type=int, default=None, help="default 4, --quick 2")
    p.add_argument("--cli", default="auto",
                   help=f"the real agent CLIs, comma-separated ({', '.join(CLIS)}), 'auto' "
                        "(default: each of them that is installed) or 'none'")
    p.add_argument("--cli-scale", action="store_true",
                   help="also run the scale scenarios on the CLI (about a minute more)")
    p.add_argument("--no-demo", action="store_true", help="skip the demo agent's part")
    p.add_argument("--quick", action="store_true",
                   help="a short model time and a smaller scale case, for a smoke test")
    p.add_argument("--json-only", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    _QUIET = args.json_only
    think = args.think if args.think is not None else (0.5 if args.quick else 3.0)
    scale_jobs = args.scale_jobs or (4 if args.quick else 8)
    scale_instances = args.scale_instances or (2 if args.quick else 4)
    if think <= 0 or args.jobs < 1 or scale_jobs < 1 or scale_instances < 1:
        p.error("--think, --jobs, --scale-jobs and --scale-instances must be positive")

    if args.cli == "auto":
        from aimterm.testing.clis import find_cli

        clis = [cli for cli in CLIS if find_cli(cli) is not None]
    elif args.cli == "none":
        clis = []
    else:
        clis = [c.strip() for c in args.cli.split(",") if c.strip()]

    started = time.perf_counter()
    failures = Failures()
    options = {"jobs": args.jobs, "scale_jobs": scale_jobs, "scale_instances": scale_instances}
    agents: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="aimterm-bench-jobs-") as tmp:
        root = Path(tmp)
        if not args.no_demo:
            agents["demo"] = run_agent(lambda: DemoAgent(root / "demo", think), failures,
                                       **options, scale=True)
        for cli in clis:
            why = cli_problem(cli)
            if why is not None:
                log(f"{cli}: skipped: {why}")
                agents[cli] = {"skipped": why}
                continue
            from aimterm.testing.clis import find_cli

            path = str(find_cli(cli))
            agents[cli] = run_agent(
                lambda cli=cli, path=path: CLI_AGENTS[cli](root / cli, think, cli, path),
                failures, **options, scale=args.cli_scale)
    left = leftovers()
    errors = [name for name, part in agents.items() if "error" in part]
    doc = {
        "benchmark": "jobs",
        "quick": args.quick,
        "think_s": think,
        "machine": machine(),
        "agents": agents,
        "met": {name: {aim: v["met"] for aim, v in part.get("aims", {}).items()}
                for name, part in agents.items() if "aims" in part},
        "failures": failures,
        "errors": errors,
        "leftovers": left,
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    print(json.dumps(doc, indent=2))
    log(f"done in {doc['elapsed_s']} s; met: {doc['met']}; "
        f"{len(failures)} failed jobs, {len(left)} leftover processes")
    return 1 if failures or errors or left else 0


if __name__ == "__main__":
    sys.exit(main())
