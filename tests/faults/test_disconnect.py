"""A prompt whose client went away does not run later: the protocol says a disconnect
cancels the client's requests, and a queued prompt is one of them."""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
import time

from tests.helpers import wait_for
from tests.test_daemon import Cluster, up, write_config


def _queued(cluster: Cluster, client_sig: str) -> bool:
    return any(e["kind"] == "prompt_queued" and client_sig in e.get("prompt", "")
               for e in cluster.events())


def test_a_queued_prompt_of_a_killed_client_never_runs(cluster: Cluster) -> None:
    # Long enough that both clients queue behind it on a loaded machine.
    write_config(cluster.root, think=8.0)
    cluster.config.write_text(cluster.config.read_text().replace("count: 2", "count: 1"))
    up(cluster)
    # The one instance is busy with a prompt nobody waits for...
    cluster.cli("send", "--no-wait", "first, keeps the instance busy")
    wait_for(lambda: cluster.status()["instances"][0]["state"] == "busy", "echo-1 busy")
    for sig in (signal.SIGINT, signal.SIGKILL):
        # ...so this one queues; then its client goes away.
        client = subprocess.Popen([sys.executable, "-m", "aimterm", "send", "-c",
                                   str(cluster.config), f"queued, client gets {sig.name}"],
                                  env=cluster.env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        wait_for(functools.partial(_queued, cluster, sig.name), "the prompt queued")
        time.sleep(0.2)
        client.send_signal(sig)
        client.wait(10)
    # The busy turn ends; the queued prompts must not start on the freed instance.
    wait_for(lambda: cluster.status()["instances"][0]["turns"] == 1, "the first turn done",
             timeout=40)
    time.sleep(1.0)
    events = cluster.events()
    started = [e.get("prompt", "") for e in events if e["kind"] == "turn_started"]
    assert started == ["first, keeps the instance busy"], started
    finished = [e["status"] for e in events if e["kind"] == "prompt_finished"]
    assert finished.count("cancelled") == 2, finished
    assert cluster.status()["queued"] == 0
