"""Multi-agent review: every instance of the fleet reviews the same change, in parallel.

The workflow it models: before merging, a change is shown to several independent reviewers
(several agents, or several runs of one agent, which are not deterministic) and their verdicts
are compared. Agreement raises confidence; a split vote is the signal to look closer. Here each
instance gets the same review prompt addressed to it by id (``pool.submit(prompt, to=id)``),
all at once, and the replies are grouped: identical replies are counted together (the
"consensus"), and the distinct replies are shown side by side.

With the bundled demo agent (the default) every reviewer echoes the prompt, so they agree
unanimously. With ``--adapter NAME`` the prompt is sent as given to that tool, which runs in
the current directory.

    python examples/multi_agent_review.py [--adapter NAME] [--count N] [--think SECONDS]

Exits 0 when every instance returned a review, 1 otherwise.
"""

from __future__ import annotations

import collections
import concurrent.futures
import shutil
import sys
import textwrap
import time

from _fleet import (
    cwd_for,
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
from aimterm.session import Turn

# The change under review, summarised on one line (agent CLIs take a prompt as typed input).
CHANGE = "retry.py: backoff() sleeps min(2**n, 30)s, was 2**n"
PROMPT = f"Review, reply APPROVE or REQUEST CHANGES + why: {CHANGE}"


def side_by_side(columns: list[tuple[str, str]], width: int) -> list[str]:
    """Render (header, body) pairs as columns that share ``width`` characters."""
    gap = " | "
    col = max(16, (width - len(gap) * (len(columns) - 1)) // len(columns))
    wrapped = []
    for header, body in columns:
        lines = [header[:col], "-" * min(col, max(len(header), 1))]
        for para in body.splitlines() or [""]:
            lines.extend(textwrap.wrap(para, col) or [""])
        wrapped.append(lines)
    height = max(len(lines) for lines in wrapped)
    out = []
    for row in range(height):
        cells = [(lines[row] if row < len(lines) else "").ljust(col) for lines in wrapped]
        out.append(gap.join(cells).rstrip())
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv=argv)
    with scratch_dir("aimterm-review-") as scratch:
        reviews: dict[str, Turn] = {}
        errors: dict[str, str] = {}
        try:
            cluster = ClusterManager(args.adapter, args.count, cwd=cwd_for(args, scratch),
                                     env=demo_env(args, scratch))
            with running(cluster):
                ids = instance_ids(cluster)
                print(f"change under review: {CHANGE}")
                print(f"asking {len(ids)} reviewers: {', '.join(ids)}\n")
                started = time.monotonic()
                # The same prompt to each instance by id, all at once.
                futures = {cluster.pool.submit(PROMPT, to=iid, timeout=args.timeout): iid
                           for iid in ids}
                for fut in concurrent.futures.as_completed(futures):
                    iid = futures[fut]
                    try:
                        turn = fut.result()
                    except AimtermError as exc:
                        errors[iid] = str(exc)
                        print(f"[{iid}] FAILED: {exc}")
                        continue
                    if not turn.ok:
                        errors[iid] = f"turn {turn.status}"
                        print(f"[{iid}] FAILED: turn {turn.status}")
                        continue
                    reviews[iid] = turn
                    print(f"[{iid}] review in {took(turn)}: {short(turn.reply, 70)}")
                wall = time.monotonic() - started
        except KeyboardInterrupt:
            return interrupted()
        except (AimtermError, TimeoutError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    print(f"\nreviews: {len(reviews)}/{len(ids)} received")
    # Consensus: group identical replies (whitespace-normalised), biggest group first.
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for iid in sorted(reviews):
        groups[" ".join(reviews[iid].reply.split())].append(iid)
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[1]))
    label = {iid: chr(ord("A") + n) if n < 26 else str(n)
             for n, (_, members) in enumerate(ranked) for iid in members}
    if ranked:
        top = len(ranked[0][1])
        verdict = "unanimous" if len(ranked) == 1 and not errors else "split"
        print(f"consensus: {top}/{len(ids)} identical ({verdict}, {len(ranked)} distinct "
              f"repl{'y' if len(ranked) == 1 else 'ies'})")
        for _, members in ranked:
            print(f"  reply {label[members[0]]}: {len(members)}x from {', '.join(members)}")
        # Side by side: every reviewer when they fit, else one column per distinct reply.
        width = shutil.get_terminal_size((120, 24)).columns
        if len(reviews) <= 4:
            columns = [(f"{iid} (reply {label[iid]})", reviews[iid].reply) for iid in sorted(reviews)]
        else:
            columns = [(f"reply {label[m[0]]} ({len(m)}x)", reviews[m[0]].reply) for _, m in ranked[:4]]
        print()
        print("\n".join(side_by_side(columns, width)))
        if len(reviews) > 4 and len(ranked) > 4:
            print(f"(+{len(ranked) - 4} more distinct replies)")
    else:
        print("consensus: none (no reviews)")
    cost = sum(float(t.metrics.get("cost", {}).get("usd", 0) or 0) for t in reviews.values())
    if cost:
        print(f"\ncost reported: ${cost:.4f}")
    summary("multi-agent review", reviews.values(), len(errors), wall, ids)
    return exit_code(len(errors))


if __name__ == "__main__":
    sys.exit(main())
