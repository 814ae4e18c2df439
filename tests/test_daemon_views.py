"""What a view of the daemon (the dashboard) reads: ``status`` with the ``seq`` it was taken
at, ``events`` from the newest ``last`` only, each instance's turn start, and a finished
prompt's tokens."""

from __future__ import annotations

import time

from aimterm.daemon import Daemon
from aimterm.errors import ProtocolError
from aimterm.ipc.client import ControlClient
from tests.helpers import wait_for
from tests.test_groups import daemon  # noqa: F401  (the fixture)


def test_status_seq_and_the_newest_events(daemon: Daemon) -> None:  # noqa: F811
    with ControlClient(daemon.config.socket_path, timeout=30) as client:
        wait_for(lambda: client.call("status")["ready"], "ready")
        for n in range(3):
            client.call("send", prompt=f"echo {n}")
        before = max(e["seq"] for e in client.stream("events"))
        seq = client.call("status")["seq"]
        assert seq >= before
        # Nothing recorded before the status is missed or repeated by following from it.
        client.call("send", prompt="echo after")
        later = list(client.stream("events", since=seq))
        assert later and all(e["seq"] > seq for e in later)
        assert [e["kind"] for e in later][0] == "prompt_queued"
        # The newest N of a kind, oldest first; N past the log is the whole log.
        finished = list(client.stream("events", kinds=["prompt_finished"]))
        assert len(finished) == 4
        assert list(client.stream("events", kinds=["prompt_finished"], last=2)) == finished[2:]
        assert list(client.stream("events", kinds=["prompt_finished"], last=99)) == finished
        assert finished[-1]["tokens"] is None and finished[-1]["cost_usd"] is None
        for bad in (0, -1, 10_001, "2", True):
            try:
                list(client.stream("events", last=bad))
            except ProtocolError as exc:
                assert "last" in str(exc)
            else:
                raise AssertionError(f"last={bad!r} was taken")


def test_a_busy_instance_says_when_its_turn_started(daemon: Daemon) -> None:  # noqa: F811
    with ControlClient(daemon.config.socket_path, timeout=30) as client:
        wait_for(lambda: client.call("status")["ready"], "ready")
        [row] = client.call("status")["instances"]
        assert row["turn_started_at"] is None
        before = time.time()
        client.call("send", prompt="sleep 1", no_wait=True)
        wait_for(lambda: client.call("status")["instances"][0]["turn_started_at"] is not None,
                 "the turn started")
        started = client.call("status")["instances"][0]["turn_started_at"]
        assert before - 0.01 <= started <= time.time()
        wait_for(lambda: client.call("status")["instances"][0]["turn_started_at"] is None,
                 "the turn over", timeout=20)


def test_usage_reads_each_instances_process_tree(daemon: Daemon) -> None:  # noqa: F811
    with ControlClient(daemon.config.socket_path, timeout=30) as client:
        wait_for(lambda: client.call("status")["ready"], "ready")
        first = client.call("usage")
        got = first["instances"]["bash-1"]
        assert got["processes"] >= 1 and got["rss_bytes"] > 1 << 20 and got["cpu_s"] >= 0
        client.call("send", prompt="sleep 0.3 & i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done")
        second = client.call("usage")
        assert second["at"] > first["at"]
        assert second["instances"]["bash-1"]["cpu_s"] > got["cpu_s"]
