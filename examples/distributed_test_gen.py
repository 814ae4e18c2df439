"""Distributed test generation: one "write tests for X" prompt per function, spread over a fleet.

The workflow it models: a codebase has many functions without tests. Each one is an
independent job ("write tests for slugify"), so the jobs are fanned out over several agent
instances with *least busy* routing (the next job goes to the instance with the least work in
hand), collected in the order they finish with ``cluster.submit`` + ``cluster.read_any``, and
each reply is saved as a test file. The point of the fleet is throughput: the summary reports
prompts per second and the speedup over running the same turns one after another (the sum of
the turn durations divided by the wall time).

With the bundled demo agent (the default) each reply is the echoed prompt, written to
``test_<name>.py`` as is; a real agent's reply is used the same way, except that when it holds a
fenced code block only the code is kept. With ``--adapter NAME`` the prompts are sent as given to
that tool, which runs in the current directory.

    python examples/distributed_test_gen.py [--adapter NAME] [--count N] [--think SECONDS]
        [--out DIR] [--items K]

Exits 0 when every prompt produced a test file, 1 otherwise.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

from _fleet import (
    cwd_for,
    demo_env,
    exit_code,
    instance_ids,
    interrupted,
    parse_args,
    running,
    scratch_dir,
    summary,
    took,
)

from aimterm.cluster import ClusterManager
from aimterm.errors import AimtermError
from aimterm.session import Turn

# What needs tests: dotted names of functions and classes.
TARGETS = [
    "textutil.slugify",
    "textutil.truncate",
    "timeparse.parse_duration",
    "dictutil.deep_merge",
    "iterutil.chunked",
    "retry.backoff",
    "cache.LRUCache",
    "version.parse_semver",
]

_FENCE = re.compile(r"```[\w+-]*\n(.*?)```", re.DOTALL)


def prompt_for(target: str) -> str:
    return f"write tests for {target} (pytest, edge cases included)"


def test_file_text(target: str, turn: Turn) -> str:
    code = _FENCE.findall(turn.reply)
    body = "\n".join(c.rstrip() for c in code) if code else turn.reply
    secs = (turn.total_ms or 0.0) / 1000
    return f"# Tests for {target} (from {turn.instance}, {secs:.2f}s)\n{body.rstrip()}\n"


def main(argv: list[str] | None = None) -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--out", metavar="DIR", help="where to write the test files "
                       "(default: a new temporary directory, kept)")
    extra.add_argument("--items", type=int, default=len(TARGETS), metavar="K",
                       help=f"how many targets to generate tests for (default {len(TARGETS)})")
    args = parse_args(__doc__ or "", extra=extra, argv=argv)
    targets = TARGETS[: max(0, args.items)]
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="aimterm-tests-"))
    out.mkdir(parents=True, exist_ok=True)

    with scratch_dir("aimterm-testgen-") as scratch:
        by_prompt = {prompt_for(t): t for t in targets}
        turns: list[Turn] = []
        written: list[Path] = []
        failures = 0
        try:
            cluster = ClusterManager(args.adapter, args.count, routing="least_busy",
                                     cwd=cwd_for(args, scratch), env=demo_env(args, scratch))
            with running(cluster):
                ids = instance_ids(cluster)
                print(f"{len(targets)} targets over {len(ids)} instances of {args.adapter} "
                      f"(least busy routing)\n")
                started = time.monotonic()
                futures = [cluster.submit(p, timeout=args.timeout) for p in by_prompt]
                for _ in futures:
                    # In finishing order. read_any raises a failed prompt's error without saying
                    # which prompt it was; the futures list tells after the loop.
                    try:
                        turn = cluster.read_any(timeout=args.timeout + 30)
                    except (AimtermError, TimeoutError) as exc:
                        failures += 1
                        print(f"[FAILED ] {exc}")
                        continue
                    target = by_prompt[turn.prompt]
                    if not turn.ok or not turn.reply.strip():
                        failures += 1
                        print(f"[{turn.instance}] {target}: FAILED (turn {turn.status}, "
                              f"{len(turn.reply)} chars)")
                        continue
                    turns.append(turn)
                    path = out / f"test_{target.replace('.', '_').lower()}.py"
                    path.write_text(test_file_text(target, turn), encoding="utf-8")
                    written.append(path)
                    print(f"[{turn.instance}] {target:<26} {took(turn):>6} -> {path.name}")
                wall = time.monotonic() - started
                for fut, prompt in zip(futures, by_prompt, strict=True):
                    if fut.done() and fut.exception() is not None:
                        print(f"  failed: {by_prompt[prompt]}: {fut.exception()}")
        except KeyboardInterrupt:
            return interrupted()
        except (AimtermError, TimeoutError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    busy = sum((t.total_ms or 0.0) for t in turns) / 1000
    print(f"\ntest files written: {len(written)}/{len(targets)} in {out}")
    print(f"throughput: {len(turns) / wall:.2f} prompts/s" if wall > 0 else "throughput: n/a")
    print(f"speedup: {busy / wall:.2f}x over one after another "
          f"(sum of turn durations {busy:.2f}s / wall {wall:.2f}s)" if wall > 0 else "speedup: n/a")
    summary("distributed test generation", turns, failures, wall, ids)
    return exit_code(failures)


if __name__ == "__main__":
    sys.exit(main())
