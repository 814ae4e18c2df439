"""A tool that never becomes ready: its start-up timeouts count as failed starts, the back-off
grows, and FATAL says why — also when the timeout is longer than the fast-failure window."""

from __future__ import annotations

import time
from typing import Any

from aimterm.events import Event, InstanceFatal, InstanceRestarting
from aimterm.pool import GroupSpec, Pool, RestartPolicy
from aimterm.states import State
from tests.helpers import fake_adapter
from tests.test_daemon import Cluster

NEVER_READY = fake_adapter("""
command: ["{py}", "-c", "import time; print('loading...', flush=True); time.sleep(60)"]
detect: stream
states: [{state: idle, region: bottom:1, any: ['^ready>$']}]
startup: {timeout_s: 0.6}
exit: {keys: [], timeout_s: 0.2, signal_grace_s: 0.2}
""", "sloth")


def test_startup_timeouts_are_failed_starts_and_end_fatal_with_the_reason() -> None:
    # fast_failure_s (0.2) is shorter than the start-up timeout (0.6): before, every timeout
    # looked like a slow, healthy exit and the instance restarted for ever at the first delay.
    policy = RestartPolicy(backoff_s=0.05, backoff_factor=2.0, fast_failure_s=0.2,
                           max_fast_failures=3)
    pool = Pool([GroupSpec(NEVER_READY, count=1)], restart=policy)
    events: list[Event] = []
    pool.bus.subscribe(events.append)
    try:
        pool.start(wait=True, timeout=30)
        inst = pool.instance("sloth-1")
        assert inst.state is State.FATAL
        assert inst.fatal_reason is not None
        assert "3 fast failures in a row" in inst.fatal_reason
        assert "startup timeout: not ready after 0.6s" in inst.fatal_reason
        delays = [e.delay_s for e in events if isinstance(e, InstanceRestarting)]
        assert delays == [0.05, 0.1]  # the back-off grows
        assert all("startup timeout" in e.reason for e in events
                   if isinstance(e, InstanceRestarting))
        fatal = [e for e in events if isinstance(e, InstanceFatal)]
        assert len(fatal) == 1 and fatal[0].failures == 3
        assert pool.status()[0]["fatal_reason"] == inst.fatal_reason
    finally:
        pool.shutdown(timeout=5)


def test_a_hundred_demo_agents_come_up_detached_with_no_failed_start(cluster: Cluster) -> None:
    # Each demo agent asks the terminal for the cursor position at start-up and dies if no
    # answer comes within 2 s; a daemon busy starting the others must still answer, and
    # answer `hello` to the `up --detach` that waits for it.
    cluster.config.write_text("state_dir: state\ninstances:\n  - adapter: demo\n    count: 100\n")
    started = time.monotonic()
    out = cluster.run("cluster", "up", "--detach", "-c", str(cluster.config), timeout=180)
    assert out.returncode == 0, out.stderr
    status = cluster.status()
    rows = status["instances"]
    assert len(rows) == 100 and status["ready"], _summary(rows)
    assert sum(r["restarts"] for r in rows) == 0, _summary(rows)
    exits = [e for e in cluster.events() if e["kind"] == "process_exited"]
    assert exits == [], exits[:3]
    print(f"100 demo agents ready in {time.monotonic() - started:.1f}s")


def _summary(rows: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['id']}:{r['state']}/{r['restarts']}" for r in rows
                     if r["state"] != "idle" or r["restarts"])
