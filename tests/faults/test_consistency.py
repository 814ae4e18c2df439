"""What the fleet reports matches what happened: a group added by `scale` has its logs like
any other, and a prompt retried after its instance died says it was retried."""

from __future__ import annotations

import json
import os
import signal

from aimterm.pool import GroupSpec, Pool, RestartPolicy
from tests.helpers import ECHO, fake_adapter, wait_for
from tests.test_daemon import Cluster, up


def test_a_group_added_by_scale_writes_its_transcript(cluster: Cluster) -> None:
    up(cluster)
    cluster.cli("cluster", "scale", "demo", "1")
    out = cluster.cli("send", "--tool", "demo", "--json", "hello there")
    assert json.loads(out.stdout)["instance"] == "demo-1"
    assert (cluster.state / "logs" / "demo-1.cast").is_file()
    logs = cluster.cli("logs", "demo-1")
    assert "hello there" in logs.stdout


def test_a_prompt_retried_on_another_instance_reports_the_retry() -> None:
    spec = fake_adapter(ECHO, "echo")
    with Pool([GroupSpec(spec, count=2, env={"FAKE_THINK": "2"})], retry_turns=1,
              restart=RestartPolicy(backoff_s=5.0)) as pool:
        future = pool.submit("survive this")
        wait_for(lambda: any(i.pending is not None for i in pool.instances()), "in flight")
        victim = next(i for i in pool.instances() if i.pending is not None)
        os.kill(victim.session.pid or 0, signal.SIGKILL)
        turn = future.result(30)
        assert turn.reply == "echo: survive this" and turn.instance != victim.id
        assert turn.retries == 1
        assert turn.to_dict()["retries"] == 1


def test_a_command_that_does_not_exist_is_named_in_status_events_and_log(
        cluster: Cluster) -> None:
    (cluster.root / "adapters" / "ghost.yaml").write_text(
        'command: ["no-such-tool-xyz", "--flag"]\n'
        "states: [{state: idle, any: ['^> $']}]\n")
    up(cluster)
    out = cluster.run("cluster", "scale", "ghost", "1", "-c", str(cluster.config))
    assert out.returncode == 0, out.stderr

    def fatal() -> dict[str, object] | None:
        rows = [r for r in cluster.status()["instances"] if r["id"] == "ghost-1"]
        return rows[0] if rows and rows[0]["state"] == "fatal" else None

    row = wait_for(fatal, "ghost-1 fatal", timeout=30)
    assert "command 'no-such-tool-xyz' not found on PATH" in str(row["fatal_reason"])
    reasons = [e.get("reason", "") for e in cluster.events()
               if e["kind"] == "state_changed" and e["instance"] == "ghost-1"]
    assert any("spawn failed" in r and "no-such-tool-xyz" in r for r in reasons), reasons
    log = (cluster.state / "daemon.log").read_text()
    assert "ghost-1: could not start" in log and "no-such-tool-xyz" in log


LINES = fake_adapter("""
command: ["{py}", "{fakes}/lines_cli.py"]
detect: stream
terminal: {scrollback: 50}
states:
  - {state: idle, region: bottom:1, any: ['^ready>$']}
settle_ms: 0
submit: {keys: [enter], verify: output}
reply: {from: stream, strip: [echo, prompt]}
exit: {keys: [ctrl-d], timeout_s: 2}
""", "lines")


def test_a_reply_cut_by_the_scrollback_bound_says_so() -> None:
    from aimterm.session import Session

    s = Session(LINES)
    s.start()
    try:
        short = s.send("10", timeout=20)
        assert not short.reply_truncated and short.reply_lines_dropped == 0
        assert short.reply.splitlines()[-1] == "line 9"
        long = s.send("500", timeout=20)
        assert long.reply_truncated and long.reply_lines_dropped > 400
        assert long.reply.splitlines()[-1] == "line 499"
        data = long.to_dict()
        assert data["reply_truncated"] is True
        assert data["reply_lines_dropped"] == long.reply_lines_dropped
    finally:
        s.stop()


def test_recovered_resumed_is_what_status_shows_resumed(cluster: Cluster) -> None:
    from tests.test_daemon import cluster_processes, gone

    status = up(cluster)
    daemon = status["daemon"]["pid"]
    # A group that `scale` added to this daemon only: the next one does not run it, so it
    # may not take the folder's resume from the instances that do come back.
    cluster.cli("cluster", "scale", "echo", "3")
    cluster.cli("send", "--to", "echo-1", "first")
    cluster.cli("send", "--to", "echo-3", "last")
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: gone(daemon), "the daemon to die")
    wait_for(lambda: not cluster_processes(cluster.state), "the instances to hang up", 20)

    status = up(cluster)
    recovered = status["daemon"]["recovered"]
    rows = {r["id"]: r for r in status["instances"]}
    assert recovered["crashed"]
    assert set(recovered["resumed"]) == {i for i, r in rows.items() if r["resumed"]}, \
        (recovered, rows)
    assert set(recovered["resumed"]) | set(recovered["not_resumed"]) == set(rows)
    assert recovered["resumed"] == ["echo-1"]  # of those that came back, its turn was last
    cluster.cli("cluster", "down")


def test_events_reads_the_store_when_no_daemon_runs(cluster: Cluster) -> None:
    import subprocess
    import sys

    fresh = cluster.run("events", "-c", str(cluster.config))
    assert fresh.returncode == 26 and "and no history in" in fresh.stderr, fresh.stderr
    up(cluster)
    cluster.cli("send", "--to", "echo-1", "kept after the daemon")
    cluster.cli("cluster", "down")
    assert not cluster.socket.exists()
    events = cluster.events()  # no daemon: straight from the store
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "daemon_started" and kinds[-1] == "daemon_stopped", kinds
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    turns = cluster.cli("events", "--json", "--kind", "turn_finished", "--instance", "echo-1")
    rows = [json.loads(line) for line in turns.stdout.splitlines()]
    assert [r["kind"] for r in rows] == ["turn_finished"] and rows[0]["instance"] == "echo-1"
    unknown = cluster.run("events", "-c", str(cluster.config), "--instance", "echo-9")
    assert unknown.returncode != 0 and "echo-9" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    # Following without a daemon keeps reading the store: a daemon started later shows up.
    last = events[-1]["seq"]
    follower = subprocess.Popen(
        [sys.executable, "-m", "aimterm", "events", "-f", "--json", "--since", str(last),
         "-c", str(cluster.config)], env=cluster.env, stdout=subprocess.PIPE, text=True)
    try:
        up(cluster)
        assert follower.stdout is not None
        line = json.loads(follower.stdout.readline())
        assert line["kind"] == "daemon_started" and line["seq"] > last, line
    finally:
        follower.kill()
        follower.communicate(timeout=10)
    cluster.cli("cluster", "down")


def test_up_detached_names_an_instance_that_gave_up_and_why(cluster: Cluster) -> None:
    (cluster.root / "adapters" / "ghost.yaml").write_text(
        'command: ["no-such-tool-xyz"]\n'
        "states: [{state: idle, any: ['^> $']}]\n")
    cluster.config.write_text(cluster.config.read_text() + "  - adapter: ghost\n    count: 1\n")
    out = cluster.run("cluster", "up", "--detach", "-c", str(cluster.config), timeout=120)
    assert out.returncode == 0, out.stderr  # the daemon is up, and serves the echo instances
    assert out.stdout.strip() == str(cluster.socket)
    warning = [line for line in out.stderr.splitlines() if "ghost-1" in line]
    assert warning and warning[0].startswith("aimterm: warning: ghost-1 is FATAL: "), out.stderr
    assert "no-such-tool-xyz" in warning[0]
