"""Plumbing shared by the examples: command-line flags, a throwaway demo environment, a
context manager that always shuts the cluster down, and the summary printout.

Nothing here is needed to use aimterm; it only keeps the examples about the workflow.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from aimterm.cluster import ClusterManager
from aimterm.session import Turn

DEMO = "demo"


def parse_args(description: str, *, extra: argparse.ArgumentParser | None = None,
               argv: list[str] | None = None) -> argparse.Namespace:
    """The flags every example takes (plus those of ``extra``, a parent parser)."""
    parents = [extra] if extra is not None else []
    p = argparse.ArgumentParser(description=description, parents=parents,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", default=DEMO,
                   help="adapter to run (default: the bundled demo agent)")
    p.add_argument("--count", type=int, default=3, help="number of instances (default 3)")
    p.add_argument("--think", type=float, default=0.5, metavar="SECONDS",
                   help="demo agent only: how long each turn stays busy (default 0.5)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="give up on a prompt after this long (default 300)")
    args = p.parse_args(argv)
    if args.count < 1:
        p.error("--count must be at least 1")
    return args


def is_demo(args: argparse.Namespace) -> bool:
    return bool(args.adapter == DEMO)


def demo_env(args: argparse.Namespace, scratch: Path) -> dict[str, str]:
    """Environment for the instances: for the demo agent a private state dir (so its first-run
    trust prompt and turn counter never touch the real home) and the think time."""
    if not is_demo(args):
        return {}
    home = scratch / "demo-home"
    home.mkdir(parents=True, exist_ok=True)
    return {"AIMTERM_DEMO_HOME": str(home), "AIMTERM_DEMO_THINK": str(args.think)}


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def running(cluster: ClusterManager) -> Iterator[ClusterManager]:
    """Start the cluster and shut it down however the block ends (error, Ctrl-C).

    ``with cluster:`` alone starts inside ``__enter__``; if start-up fails or is interrupted
    part-way, ``__exit__`` never runs and the instances already spawned would be left behind.
    Here the shutdown is armed before the start.
    """
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.shutdown()


def cwd_for(args: argparse.Namespace, scratch: Path) -> str | None:
    """Where the instances run: a throwaway dir for the demo agent, the current directory
    (the project being worked on) for a real tool."""
    if not is_demo(args):
        return None
    work = scratch / "work"
    work.mkdir(parents=True, exist_ok=True)
    return str(work)


def took(turn: Turn) -> str:
    """A turn's duration (dispatch to idle), readable at any scale."""
    ms = turn.total_ms or 0.0
    return f"{ms:.0f}ms" if ms < 1000 else f"{ms / 1000:.2f}s"


def short(text: str, width: int = 70) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def summary(title: str, turns: Iterable[Turn], failures: int, wall_s: float,
            instances: Iterable[str] = ()) -> None:
    """Wall time, turns per instance (idle ones included), failures."""
    per: collections.Counter[str] = collections.Counter({i: 0 for i in instances})
    done = list(turns)
    per.update(t.instance for t in done)
    print()
    print(f"== {title} ==")
    print(f"wall time: {wall_s:.2f}s")
    print(f"turns: {len(done)} ok, {failures} failed")
    for iid in sorted(per):
        print(f"  {iid}: {per[iid]} turn{'s' if per[iid] != 1 else ''}")


def instance_ids(cluster: ClusterManager) -> list[str]:
    return [row["id"] for row in cluster.get_status()]


def exit_code(failures: int) -> int:
    return 0 if failures == 0 else 1


def interrupted() -> int:
    print("\ninterrupted: cluster shut down", flush=True)
    return 130

