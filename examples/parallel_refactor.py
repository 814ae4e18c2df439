"""Parallel refactor: a fleet of coding agents, each in its own copy of the repository.

The workflow it models: a mechanical refactor (rename ``fetch`` to ``load``, then add type
hints) touches several files. Instead of one agent doing them one after another, a fleet of
agents works in parallel, each in an isolated checkout so they never trip over each other's
half-written files. Each file is a unit of work with two steps, and the second step must run
where the first one did (it builds on that checkout), so prompts are routed *sticky* with the
file path as key: the first prompt for a file binds the file to an instance, the follow-up
waits for that same instance.

The isolation comes from the ``GroupSpec.setup`` hook, called once per instance before it
starts: here it copies a small throwaway repository into ``worktrees/<instance>/`` and returns
``InstanceSetup(cwd=...)``. In a real project the same hook would run ``git worktree add``.

With the bundled demo agent (the default) the prompts ``edit <path>: <text>`` really write the
file (after a confirmation the demo adapter answers). With ``--adapter NAME`` the same prompts
are sent as given to another tool. Afterwards the script shows which instance edited which file
and checks every file changed on disk, in the checkout of the instance that edited it.

    python examples/parallel_refactor.py [--adapter NAME] [--count N] [--think SECONDS]

Exits 0 when every prompt succeeded and every file has its new content, 1 otherwise.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import sys
import time
from pathlib import Path

from _fleet import (
    demo_env,
    exit_code,
    instance_ids,
    interrupted,
    parse_args,
    running,
    scratch_dir,
    short,
    summary,
    took,
)

from aimterm.cluster import ClusterManager
from aimterm.errors import AimtermError
from aimterm.pool import GroupSpec, InstanceSetup
from aimterm.session import Turn

# The throwaway repository: path -> original content (one line each, to keep prompts short).
REPO = {
    "src/shop/http.py": "def fetch(url): return get(url).body",
    "src/shop/catalog.py": "from .http import fetch; def products(): return fetch('/products')",
    "src/shop/cart.py": "from .http import fetch; def cart(uid): return fetch(f'/cart/{uid}')",
    "src/shop/orders.py": "from .http import fetch; def orders(uid): return fetch(f'/orders/{uid}')",
    "src/shop/users.py": "from .http import fetch; def user(uid): return fetch(f'/users/{uid}')",
}

# The refactor, per file: step 1 renames fetch -> load, step 2 (on the same checkout, building
# on step 1) adds type hints.
PLAN = {
    "src/shop/http.py": [
        "def load(url): return get(url).body",
        "def load(url: str) -> bytes: return get(url).body",
    ],
    "src/shop/catalog.py": [
        "from .http import load; def products(): return load('/products')",
        "from .http import load; def products() -> bytes: return load('/products')",
    ],
    "src/shop/cart.py": [
        "from .http import load; def cart(uid): return load(f'/cart/{uid}')",
        "from .http import load; def cart(uid: int) -> bytes: return load(f'/cart/{uid}')",
    ],
    "src/shop/orders.py": [
        "from .http import load; def orders(uid): return load(f'/orders/{uid}')",
        "from .http import load; def orders(uid: int) -> bytes: return load(f'/orders/{uid}')",
    ],
    "src/shop/users.py": [
        "from .http import load; def user(uid): return load(f'/users/{uid}')",
        "from .http import load; def user(uid: int) -> bytes: return load(f'/users/{uid}')",
    ],
}


def make_repo(root: Path) -> Path:
    repo = root / "repo"
    for rel, text in REPO.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    return repo


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv=argv)
    with scratch_dir("aimterm-refactor-") as scratch:
        repo = make_repo(scratch)
        checkouts: dict[str, Path] = {}

        def setup(instance_id: str, index: int) -> InstanceSetup:
            # One private checkout per instance (a `git worktree add` in a real project).
            dest = scratch / "worktrees" / instance_id
            shutil.copytree(repo, dest, dirs_exist_ok=True)
            checkouts[instance_id] = dest
            return InstanceSetup(cwd=str(dest))

        group = GroupSpec(args.adapter, count=args.count, env=demo_env(args, scratch), setup=setup)
        failures = 0
        turns: list[Turn] = []
        edited_by: dict[str, list[str]] = {path: [] for path in PLAN}
        try:
            cluster = ClusterManager([group], routing="sticky")
            with running(cluster):
                ids = instance_ids(cluster)
                print(f"{len(ids)} instances of {args.adapter}, one checkout each:")
                for iid in ids:
                    print(f"  {iid}: {checkouts[iid]}")
                print()
                started = time.monotonic()
                # Submit everything at once. Sticky routing plus the FIFO queue keep each file's
                # steps in order on one instance; different files run in parallel.
                futures: dict[concurrent.futures.Future[Turn], tuple[str, int]] = {}
                for step in range(2):
                    for path, contents in PLAN.items():
                        prompt = f"edit {path}: {contents[step]}"
                        fut = cluster.submit(prompt, key=path, timeout=args.timeout)
                        futures[fut] = (path, step)
                for fut in concurrent.futures.as_completed(futures):
                    path, step = futures[fut]
                    try:
                        turn = fut.result()
                    except AimtermError as exc:
                        failures += 1
                        print(f"[FAILED ] {path} step {step + 1}: {exc}")
                        continue
                    if not turn.ok:
                        failures += 1
                        print(f"[FAILED ] {path} step {step + 1}: turn {turn.status}")
                        continue
                    turns.append(turn)
                    edited_by[path].append(turn.instance)
                    print(f"[{turn.instance}] {path} step {step + 1}/2 "
                          f"({took(turn)}): {short(turn.reply, 60)}")
                wall = time.monotonic() - started
        except KeyboardInterrupt:
            return interrupted()
        except (AimtermError, TimeoutError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

        # Who edited what, and did the files really change (in that instance's checkout)?
        print()
        print("file                    instance   on disk")
        changed = problems = 0
        for path, contents in PLAN.items():
            holders = sorted(set(edited_by[path]))
            if len(holders) != 1:
                problems += 1
                where = ",".join(holders) or "-"
                print(f"{path:<23} {where:<10} NOT EDITED ON ONE INSTANCE")
                continue
            iid = holders[0]
            text = (checkouts[iid] / path).read_text(encoding="utf-8")
            original = (repo / path).read_text(encoding="utf-8")
            if text == contents[-1] + "\n" and text != original:
                changed += 1
                verdict = "changed"
            elif text != original:
                changed += 1
                verdict = "changed (not the planned text)"
            else:
                problems += 1
                verdict = "UNCHANGED"
            print(f"{path:<23} {iid:<10} {verdict}")
        print(f"\nfiles changed on disk: {changed}/{len(PLAN)}")
        untouched = all((repo / p).read_text(encoding="utf-8") == t + "\n" for p, t in REPO.items())
        print(f"original repo untouched: {'yes' if untouched else 'NO'}")
        problems += 0 if untouched else 1
        summary("parallel refactor", turns, failures, wall, ids)
    if problems:
        print(f"checks failed: {problems}")
    return exit_code(failures + problems)


if __name__ == "__main__":
    sys.exit(main())
