"""The cluster daemon end to end: real daemons, real instances, the real CLI.

Every test has its own short state dir (a Unix socket path has at most 107 bytes) and a
cluster of two fake echo instances; the leak check of conftest fails any test that leaves
the daemon or an instance behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from aimterm.config import load_cluster_config
from aimterm.errors import ConfigError
from aimterm.store import Store
from tests.helpers import ECHO, FAKES, wait_for


@dataclass
class Cluster:
    root: Path
    config: Path
    state: Path
    env: dict[str, str]

    @property
    def socket(self) -> Path:
        return self.state / "control.sock"

    def run(self, *args: str, timeout: float = 60.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "aimterm", *args], capture_output=True,
                              text=True, env=self.env, timeout=timeout, input=input)

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """A command that takes ``-c``; it must succeed."""
        out = self.run(*args, "-c", str(self.config), timeout=timeout)
        assert out.returncode == 0, f"{args}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
        return out

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.cli("cluster", "status", "--json").stdout)
        return data

    def events(self) -> list[dict[str, Any]]:
        out = self.cli("events", "--json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


#: Ignores SIGHUP and SIGTERM and leaves a grandchild in its process group: survives the
#: death of its daemon (which closes its PTY) until someone kills the group.
STUBBORN = """
command: ["{py}", "{fakes}/slow_exit.py"]
detect: stream
states: [{state: idle, region: bottom:1, any: ['^slow>$']}]
settle_ms: 0
exit: {keys: [quit, enter], timeout_s: 1, signal_grace_s: 0.3}
"""


def write_config(root: Path, think: float = 0.0, stubborn: bool = False,
                 hosts: str = "auto") -> Path:
    config = root / "cluster.yaml"
    extra = ("  - adapter: stubborn\n    count: 1\n    env: {FAKE_EXIT_DELAY: '0.1'}\n"
             if stubborn else "")
    config.write_text(f"""\
state_dir: state
hosts: {hosts}
restart: {{backoff_s: 0.1, fast_failure_s: 1}}
instances:
  - adapter: echo
    count: 2
    env: {{FAKE_THINK: "{think}"}}
""" + extra)
    return config


def cluster_processes(state: Path) -> list[int]:
    """Every process started for the cluster of ``state`` (instances and their children)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if (proc.status() != psutil.STATUS_ZOMBIE
                    and proc.environ().get("AIMTERM_CLUSTER") == str(state)):
                found.append(proc.pid)
        except (psutil.Error, OSError):
            pass
    return found


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="atd-", dir="/tmp"))
    adapters = root / "adapters"
    adapters.mkdir()
    for name, text in (("echo", ECHO), ("stubborn", STUBBORN)):
        (adapters / f"{name}.yaml").write_text(
            text.replace("{fakes}", str(FAKES)).replace("{py}", sys.executable))
    env = dict(os.environ, AIMTERM_ADAPTER_PATH=str(adapters),
               XDG_STATE_HOME=str(root / "xdg-state"), XDG_CONFIG_HOME=str(root / "xdg-config"))
    c = Cluster(root, write_config(root), root / "state", env)
    try:
        yield c
    finally:
        # Whatever the test did, no daemon and no instance of this cluster survives it.
        if c.socket.exists():
            c.run("cluster", "down", "-c", str(c.config), timeout=30)
        for pid in cluster_processes(c.state):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(root, ignore_errors=True)


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def up(c: Cluster) -> dict[str, Any]:
    out = c.cli("cluster", "up", "--detach")
    assert out.stdout.strip() == str(c.socket)
    status = c.status()
    assert status["ready"]
    return status


def test_up_status_send_events_down(cluster: Cluster) -> None:
    status = up(cluster)
    assert cluster.state.stat().st_mode & 0o777 == 0o700
    rows = status["instances"]
    assert [(r["id"], r["adapter"], r["state"]) for r in rows] == [
        ("echo-1", "echo", "idle"), ("echo-2", "echo", "idle")]
    pids = [r["pid"] for r in rows] + [status["daemon"]["pid"]]
    assert all(isinstance(p, int) and psutil.pid_exists(p) for p in pids)

    # status must answer fast: no runtime imports on the client side.
    start = time.monotonic()
    cluster.cli("cluster", "status")
    wall = time.monotonic() - start
    print(f"aimterm cluster status: {wall * 1000:.0f} ms")
    assert wall < 1.0

    second = cluster.run("cluster", "up", "--detach", "-c", str(cluster.config))
    assert second.returncode == 25
    assert second.stderr.strip() == f"aimterm: a server is already listening on {cluster.socket}"
    # The daemon itself refuses too (the socket is live), and leaves the running one alone.
    direct = subprocess.run([sys.executable, "-m", "aimterm.daemon", "-c", str(cluster.config)],
                            env=cluster.env, capture_output=True, text=True, timeout=30)
    assert direct.returncode == 25
    assert direct.stderr.endswith(f"aimterm: a server is already listening on {cluster.socket}\n")
    assert cluster.status()["daemon"]["pid"] == status["daemon"]["pid"]

    assert cluster.cli("send", "hi").stdout == "echo: hi\n"
    turn = json.loads(cluster.cli("send", "--json", "--to", "echo-2", "there").stdout)
    assert turn["reply"] == "echo: there" and turn["instance"] == "echo-2"
    piped = cluster.run("send", "-", "-c", str(cluster.config), input="from stdin\n")
    assert piped.stdout == "echo: from stdin\n"
    missing = cluster.run("send", "--tool", "nope", "x", "-c", str(cluster.config))
    assert missing.returncode == 11 and missing.stderr.startswith("aimterm: ")
    assert len(missing.stderr.strip().splitlines()) == 1

    events = cluster.events()
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "daemon_started"
    changes = [(e["instance"], e["old"], e["new"]) for e in events if e["kind"] == "state_changed"]
    assert ("echo-1", "starting", "idle") in changes and ("echo-2", "idle", "busy") in changes
    assert [e["status"] for e in events if e["kind"] == "turn_finished"] == ["done"] * 3
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)

    out = cluster.cli("cluster", "down")
    assert out.stdout.startswith(f"aimterm: daemon {status['daemon']['pid']} stopped")
    wait_for(lambda: all(gone(p) for p in pids), "the daemon and its instances to exit")
    assert not cluster.socket.exists()
    with Store(cluster.state / "aimterm.db") as store:
        turns = store.turns()
        assert [(t["status"], t["reply"]) for t in reversed(turns)] == [
            ("done", "echo: hi"), ("done", "echo: there"), ("done", "echo: from stdin")]
        assert store.events()[-1]["kind"] == "daemon_stopped"


def test_client_without_daemon_says_so_in_one_line(cluster: Cluster) -> None:
    for args in (["send", "hi"], ["cluster", "status"], ["events"], ["cluster", "down"]):
        out = cluster.run(*args, "-c", str(cluster.config))
        assert out.returncode == 26, out
        # (events reads the store without a daemon: here there is none yet either)
        history = f", and no history in {cluster.state}" if args == ["events"] else ""
        assert out.stderr == (f"aimterm: no daemon at {cluster.socket}{history} "
                              "(start one with aimterm cluster up)\n")
    out = cluster.run("send", "hi", "--state-dir", str(cluster.root / "other"))
    assert out.stderr.startswith(f"aimterm: no daemon at {cluster.root / 'other'}/control.sock")


@pytest.mark.parametrize(("text", "line", "message"), [
    ("routing: fastest\n", 1,
     "routing: expected one of: round_robin, least_busy, sticky; got string 'fastest'"),
    ("queue_size: 10\ninstances:\n  - adapter: echo\n    count: two\n", 4,
     "instances[0].count: expected an integer, got string 'two'"),
    ("restart:\n  backoff_s: 1\n  backof_max_s: 3\n", 3,
     "restart.backof_max_s: unknown key 'backof_max_s' (expected one of: backoff_max_s, "
     "backoff_s, fast_failure_s, max_fast_failures)"),
    ("instances:\n  - count: 2\n", 2, "instances[0]: missing key 'adapter' (the adapter to run)"),
    ("instances:\n  - adapter: echo\n    env: {A: [1]}\n", 3,
     "instances[0].env.A: expected a string, a number, or true/false, got a list"),
    ("queue_timeout_s: -1\n", 1, "queue_timeout_s: expected a number > 0, got -1"),
    ("instances:\n  - adapter: echo\n    resume: yes\n", 3,
     "instances[0].resume: expected one of: after_crash, always, never; got boolean true"),
    ("statedir: /tmp/x\n", 1, "statedir: unknown key 'statedir' (expected one of: hosts, "
     "instances, log_max_mb, max_instances, queue_size, queue_timeout_s, restart, routing, "
     "socket, state_dir)"),
    ("log_max_mb: 0\n", 1, "log_max_mb: expected a number > 0, got 0"),
])
def test_bad_cluster_file_names_file_line_and_key(tmp_path: Path, text: str, line: int,
                                                  message: str) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_cluster_config(path)
    assert str(info.value) == f"{path}:{line}: {message}"


def test_bad_cluster_file_on_the_command_line(cluster: Cluster) -> None:
    cluster.config.write_text("state_dir: state\ninstances:\n  - adapter: echo\n    count: -1\n")
    out = cluster.run("cluster", "up", "--detach", "-c", str(cluster.config))
    assert out.returncode == 2
    assert out.stderr == (f"aimterm: {cluster.config}:4: instances[0].count: "
                          "expected an integer >= 0, got -1\n")


def test_config_defaults_and_socket_per_state_dir(tmp_path: Path) -> None:
    default = load_cluster_config(None)
    assert [(g.adapter, g.count) for g in default.instances] == [("demo", 3)]
    assert default.socket_path == default.state_dir / "control.sock"
    example = load_cluster_config(Path(__file__).parent.parent / "configs" / "cluster.yaml")
    assert example.instances[0].adapter == "demo"
    path = tmp_path / "c.yaml"
    path.write_text("state_dir: here\n")
    assert load_cluster_config(path).socket_path == tmp_path / "here" / "control.sock"


def test_sigkill_keeps_history_and_reports_the_inflight_prompt(cluster: Cluster) -> None:
    # Every terminal on the daemon's own loop: its tools outlive it, and the next daemon
    # finds them (with session hosts, the hosts kill them: the next test).
    write_config(cluster.root, think=5, stubborn=True, hosts="0")
    status = up(cluster)
    daemon = status["daemon"]["pid"]
    fleet = cluster_processes(cluster.state)  # the instances and the stubborn grandchild
    assert len(fleet) == 4
    queued = cluster.cli("send", "--tool", "echo", "--no-wait", "slow one").stdout
    assert queued.startswith("queued ")
    wait_for(lambda: any(r["state"] == "busy" for r in cluster.status()["instances"]),
             "the prompt to be in flight")
    before = cluster.events()
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: gone(daemon), "the daemon to die")
    # The echo instances hang up with their PTYs; the stubborn one's grandchild ignores
    # SIGHUP and outlives them all, until the next daemon.
    wait_for(lambda: len(cluster_processes(cluster.state)) == 1, "the instances to hang up")
    [orphan] = cluster_processes(cluster.state)

    status = up(cluster)
    assert status["daemon"]["pid"] != daemon
    recovered = status["daemon"]["recovered"]
    assert recovered["turns_failed"] == 1 and recovered["prompts_lost"] == 1
    assert recovered["orphans_killed"] == 1
    assert [(e["pid"], e["instance"]) for e in cluster.events() if e["kind"] == "orphan_killed"] \
        == [(orphan, "stubborn-1")]
    wait_for(lambda: all(gone(p) for p in fleet), "the orphans to be killed")

    after = cluster.events()
    assert after[: len(before)] == before  # the history is intact
    new = after[len(before):]
    failed = [e for e in new if e["kind"] == "turn_failed"]
    assert len(failed) == 1 and failed[0]["prompt"] == "slow one"
    assert "daemon restarted" in failed[0]["error"]
    lost = [e for e in new if e["kind"] == "prompt_finished" and e["status"] == "lost"]
    assert [e["prompt"] for e in lost] == ["slow one"]
    with Store(cluster.state / "aimterm.db") as store:
        [turn] = store.turns()
        assert turn["prompt"] == "slow one" and turn["status"] == "failed"
        assert store.inflight_turns() == []
    cluster.cli("cluster", "down")


def test_sigkill_with_session_hosts_leaves_no_tool_behind(cluster: Cluster) -> None:
    """The hosts see their link close and kill every tool's group, the stubborn grandchild
    that ignores SIGHUP included; the next daemon has no orphan to find."""
    write_config(cluster.root, think=5, stubborn=True, hosts="2")
    status = up(cluster)
    daemon = status["daemon"]["pid"]
    assert {r["host"] for r in status["instances"]} == {0, 1}
    fleet = cluster_processes(cluster.state)
    assert len(fleet) == 4
    cluster.cli("send", "--tool", "echo", "--no-wait", "slow one")
    wait_for(lambda: any(r["state"] == "busy" for r in cluster.status()["instances"]),
             "the prompt to be in flight")
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: gone(daemon), "the daemon to die")
    wait_for(lambda: not cluster_processes(cluster.state), "every tool gone", timeout=15)
    status = up(cluster)
    recovered = status["daemon"]["recovered"]
    assert recovered["turns_failed"] == 1 and recovered["orphans_killed"] == 0
    cluster.cli("cluster", "down")


def test_sigterm_stops_gracefully_with_status_0(cluster: Cluster) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "aimterm.daemon", "-c", str(cluster.config)],
                            env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    follower: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: cluster.run("cluster", "status", "--json", "-c",
                                     str(cluster.config)).returncode == 0,
                 "the daemon to answer", timeout=20)
        status = wait_for(lambda: (s := cluster.status())["ready"] and s, "the fleet")
        pids = [r["pid"] for r in status["instances"]]
        follower = subprocess.Popen([sys.executable, "-m", "aimterm", "events", "-f", "--json",
                                     "-c", str(cluster.config)], env=cluster.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())  # the history comes first
        assert first["kind"] == "daemon_started"
        assert cluster.cli("send", "live").stdout == "echo: live\n"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        # The follower saw it all live, and its stream ended cleanly with the daemon.
        rest, ferr = follower.communicate(timeout=10)
        assert follower.returncode == 0, ferr
        kinds = [json.loads(line)["kind"] for line in rest.splitlines()]
        assert "turn_finished" in kinds and kinds[-1] == "daemon_stopped"
        assert all(gone(p) for p in pids)
        assert not cluster.socket.exists()
    finally:
        for p in (proc, follower):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()


def test_sigkill_then_up_resumes_the_fleet_once(cluster: Cluster) -> None:
    status = up(cluster)
    daemon = status["daemon"]["pid"]
    assert not any(r["resumed"] for r in status["instances"])
    assert cluster.cli("send", "--to", "echo-1", "remember me").stdout == "echo: remember me\n"
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: gone(daemon), "the daemon to die")
    wait_for(lambda: not cluster_processes(cluster.state), "the instances to hang up")
    assert cluster.socket.exists()  # the dead daemon's socket: stale, replaced by the next one

    status = up(cluster)
    recovered = status["daemon"]["recovered"]
    # Both ran in one folder, where a tool resumes "the latest conversation": echo-1 had the
    # last turn, so it resumes; echo-2 would only continue echo-1's conversation.
    assert recovered["crashed"] and recovered["resumed"] == ["echo-1"]
    assert recovered["not_resumed"] == {
        "echo-2": "shares the daemon's folder with echo-1, whose turn came last (echo resumes "
                  "the latest conversation of a folder)"}
    assert [(r["id"], r["resumed"]) for r in status["instances"]] == [("echo-1", True),
                                                                       ("echo-2", False)]
    argv = {r["id"]: psutil.Process(r["pid"]).cmdline() for r in status["instances"]}
    assert "--resume" in argv["echo-1"] and "--resume" not in argv["echo-2"]
    # The tool saw its resume flag; the run before the crash is kept beside it.
    assert "resumed previous session" in cluster.cli("logs", "echo-1").stdout
    assert "resumed previous session" not in cluster.cli("logs", "echo-2").stdout
    assert "echo: remember me" in cluster.cli("logs", "echo-1", "--previous", "1").stdout
    with Store(cluster.state / "aimterm.db") as store:
        assert {row["id"]: row["resume"] for row in store.instances()} == {
            "echo-1": True, "echo-2": False}

    # After a clean stop the next fleet starts fresh.
    cluster.cli("cluster", "down")
    status = up(cluster)
    assert not status["daemon"]["recovered"]["crashed"]
    assert status["daemon"]["recovered"]["resumed"] == []
    assert not any(r["resumed"] for r in status["instances"])
    cluster.cli("cluster", "down")


def test_logs_rendered_raw_last_lines_previous_and_unknown(cluster: Cluster) -> None:
    up(cluster)
    for prompt in ("one", "two"):
        cluster.cli("send", "--to", "echo-1", prompt)
    # Rendered: the text the terminal shows, typed echo included, no escape sequences.
    wait_for(lambda: "echo: two" in cluster.cli("logs", "echo-1").stdout, "the log to be flushed",
             timeout=5)
    text = cluster.cli("logs", "echo-1").stdout
    assert text.splitlines() == ["ready> one", "echo: one", "ready> two", "echo: two", "ready>"]
    assert cluster.cli("logs", "echo-1", "-n", "2").stdout == "echo: two\nready>\n"
    # Raw: the bytes as the tool wrote them (the tty's CR LF included).
    raw = subprocess.run([sys.executable, "-m", "aimterm", "logs", "echo-1", "--raw", "-c",
                          str(cluster.config)], env=cluster.env, capture_output=True,
                         timeout=30, check=True).stdout
    assert b"echo: one\r\nready> " in raw and b"\x1b" not in raw
    # An instance restarted: its previous run is kept, the current one starts empty.
    cluster.cli("cluster", "restart", "echo-1")
    assert cluster.cli("logs", "echo-1").stdout == "ready>\n"
    assert "echo: two" in cluster.cli("logs", "echo-1", "-p", "1").stdout
    # Unknown: one line naming the ones there are, and the unknown-instance exit code.
    out = cluster.run("logs", "nobody", "-c", str(cluster.config))
    assert out.returncode == 16 and out.stdout == ""
    assert out.stderr == ("aimterm: no instance named 'nobody' "
                          "(instances: echo-1, echo-2)\n")
    out = cluster.run("logs", "echo-2", "-p", "2", "-c", str(cluster.config))
    assert out.returncode == 16
    cluster.cli("cluster", "down")
    # The logs outlive the daemon.
    assert "echo: two" in cluster.cli("logs", "echo-1", "-p", "1").stdout


def test_logs_follow_prints_lines_as_they_come_and_across_a_restart(cluster: Cluster) -> None:
    up(cluster)
    follower = subprocess.Popen([sys.executable, "-m", "aimterm", "logs", "-f", "echo-2",
                                 "-c", str(cluster.config)], env=cluster.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []

    def read_until(text: str) -> None:
        assert follower.stdout is not None
        deadline = time.monotonic() + 15
        while text not in seen:
            assert time.monotonic() < deadline, f"no {text!r} in {seen}"
            line = follower.stdout.readline()
            assert line, f"the follower ended: {seen}"
            seen.append(line.rstrip("\n"))

    try:
        cluster.cli("send", "--to", "echo-2", "live one")
        read_until("echo: live one")
        cluster.cli("send", "--to", "echo-2", "live two")
        read_until("echo: live two")
        cluster.cli("cluster", "restart", "echo-2")
        cluster.cli("send", "--to", "echo-2", "new run")
        read_until("--- echo-2: new run ---")
        read_until("echo: new run")
        assert seen.index("ready> live one") < seen.index("echo: live one") \
            < seen.index("echo: live two") < seen.index("echo: new run")
        assert seen.count("echo: live one") == 1
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=10)
        assert follower.returncode == 0, err
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    cluster.cli("cluster", "down")


def test_unknown_instance_is_one_line_and_exit_16_everywhere(cluster: Cluster) -> None:
    up(cluster)
    # (attach needs a terminal first: test_attach covers it inside a PTY.)
    for args in (["send", "--to", "echo-9", "hi"], ["cluster", "restart", "echo-9"],
                 ["logs", "echo-9"]):
        out = cluster.run(*args, "-c", str(cluster.config))
        assert out.returncode == 16, (args, out)
        assert out.stderr == ("aimterm: no instance named 'echo-9' "
                              "(instances: echo-1, echo-2)\n"), args
    # Nothing about it reached the fleet.
    assert all(r["state"] == "idle" and r["restarts"] == 0
               for r in cluster.status()["instances"])
    cluster.cli("cluster", "down")


def test_logs_roll_over_past_log_max_mb_and_a_follower_reads_on(cluster: Cluster) -> None:
    text = cluster.config.read_text().replace("state_dir: state\n",
                                              "state_dir: state\nlog_max_mb: 0.001\n")
    cluster.config.write_text(text)
    up(cluster)
    follower = subprocess.Popen([sys.executable, "-m", "aimterm", "logs", "-f", "echo-1",
                                 "-c", str(cluster.config)], env=cluster.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # One client sends them all (a turn is ~0.2 KB of transcript with its markers), so
        # the 1 KB file rolls over several times, slowly enough for a poller.
        script = ("import time\nfrom aimterm.ipc.client import ControlClient\n"
                  f"with ControlClient({str(cluster.socket)!r}) as c:\n"
                  "    for i in range(40):\n"
                  "        c.call('send', prompt=f'p{i}', to='echo-1')\n"
                  "        time.sleep(0.04)\n")
        subprocess.run([sys.executable, "-c", script], env=cluster.env, check=True, timeout=60)
        logs = sorted(p.name for p in (cluster.state / "logs").iterdir()
                      if p.name.startswith("echo-1"))
        assert logs == ["echo-1.cast", "echo-1.cast.1", "echo-1.cast.2", "echo-1.cast.3"]
        seen: list[str] = []
        assert follower.stdout is not None
        deadline = time.monotonic() + 20
        while "echo: p39" not in seen:
            assert time.monotonic() < deadline, seen
            line = follower.stdout.readline()
            assert line, seen
            seen.append(line.rstrip("\n"))
        # Every reply once, in order, and no "new run": a roll-over is the same run.
        assert [s for s in seen if s.startswith("echo: ")] == [f"echo: p{i}" for i in range(40)]
        assert not any(s.startswith("---") for s in seen)
        follower.send_signal(signal.SIGINT)
        follower.communicate(timeout=10)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    cluster.cli("cluster", "down")


def test_the_store_logs_an_instance_crash_before_the_restart_it_causes(cluster: Cluster) -> None:
    """The log's sequence follows causality: exit, then back-off and restart."""
    status = up(cluster)
    victim = status["instances"][0]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_for(lambda: any(r["id"] == victim["id"] and r["state"] == "idle"
                         and r["pid"] != victim["pid"] for r in cluster.status()["instances"]),
             "the instance to come back")
    events = [e for e in cluster.events() if e["instance"] == victim["id"]]
    labels = [f"{e['old']}->{e['new']}" if e["kind"] == "state_changed" else e["kind"]
              for e in events]
    crash = labels.index("idle->exited")
    assert labels[crash:crash + 5] == ["idle->exited", "process_exited", "exited->backoff",
                                       "instance_restarting", "backoff->starting"], labels
    stamps = [e["ts"] for e in events]
    assert stamps == sorted(stamps)


def with_confirm(c: Cluster) -> None:
    """The cluster gets a tool that asks before it acts (confirm-1) beside its echoes."""
    from tests.helpers import CONFIRM

    (c.root / "adapters" / "confirm.yaml").write_text(
        CONFIRM.replace("{fakes}", str(FAKES)).replace("{py}", sys.executable))
    c.config.write_text(c.config.read_text() + "  - adapter: confirm\n    count: 1\n")


def test_answer_drain_screen_turns_and_filtered_events_from_the_cli(cluster: Cluster) -> None:
    with_confirm(cluster)
    up(cluster)
    cluster.cli("send", "--to", "echo-1", "hi")
    assert cluster.cli("screen", "echo-1").stdout.splitlines()[-2:] == ["echo: hi", "ready>"]
    shown = json.loads(cluster.cli("screen", "echo-1", "--json", "-n", "3").stdout)
    assert (shown["id"], shown["state"], len(shown["lines"])) == ("echo-1", "idle", 3)

    # A question nobody's rule answers: the prompt waits, a person answers from the CLI.
    assert cluster.cli("send", "--no-wait", "--to", "confirm-1", "do risky").stdout \
        .startswith("queued ")
    wait_for(lambda: any(r["id"] == "confirm-1" and r["state"] == "waiting"
                         for r in cluster.status()["instances"]), "the question")
    assert cluster.cli("answer", "confirm-1", "y", "enter").stdout == "confirm-1: busy\n"
    turns = wait_for(lambda: (t := json.loads(cluster.cli("turns", "confirm-1", "--json")
                                              .stdout)) and t[0]["reply"] and t,
                     "the answered turn's reply")
    assert [(t["prompt"], t["status"]) for t in turns] == [("do risky", "done")]
    assert turns[0]["reply"].endswith("did risky")
    listed = cluster.cli("turns", "-n", "2").stdout.splitlines()
    assert len(listed) == 2 and "confirm-1" in listed[0] and "do risky -> did risky" in listed[0]
    assert "echo-1" in listed[1] and "hi -> echo: hi" in listed[1]

    assert cluster.cli("drain", "echo-2").stdout == "echo-2: removed\n"
    assert [r["id"] for r in cluster.status()["instances"]] == ["confirm-1", "echo-1"]

    out = cluster.cli("events", "--json", "--kind", "instance_removed", "--kind",
                      "question_answered").stdout
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["kind"], e["instance"]) for e in events] == [
        ("question_answered", "confirm-1"), ("instance_removed", "echo-2")]
    assert events[0]["rule"] == "caller" and events[1]["reason"] == "drained"
    mine = [json.loads(line) for line in
            cluster.cli("events", "--json", "--instance", "echo-1").stdout.splitlines()]
    assert mine and {e["instance"] for e in mine} == {"echo-1"}
    text = cluster.cli("events", "--kind", "prompt_finished").stdout.splitlines()
    assert len(text) == 2 and all("prompt_finished" in line for line in text)
    cluster.cli("cluster", "down")


def test_bad_input_is_one_line_with_its_exit_code(cluster: Cluster) -> None:
    up(cluster)
    for args, code, message in [
        (["interrupt", "echo-1"], 6, "no turn to interrupt"),
        (["answer", "echo-1", "y"], 6, "no question is pending"),
        (["drain", "echo-9"], 16, "no instance named 'echo-9'"),
        (["screen", "echo-9"], 16, "no instance named 'echo-9'"),
        (["turns", "echo-9"], 16, "no instance named 'echo-9'"),
        (["events", "--instance", "echo-9"], 16, "no instance named 'echo-9'"),
        (["events", "--kind", "nope"], 20, "unknown event kind 'nope' (kinds: daemon_started"),
    ]:
        out = cluster.run(*args, "-c", str(cluster.config))
        assert out.returncode == code, (args, out)
        first, *rest = out.stderr.splitlines()
        assert first.startswith("aimterm: ") and message in first, (args, out.stderr)
        # One line, but for a session's own error, which shows the screen it saw.
        assert not rest or rest[0] == "  last screen lines:", (args, out.stderr)
    assert all(r["state"] == "idle" for r in cluster.status()["instances"])
    cluster.cli("cluster", "down")


def test_new_ops_bound_every_argument(cluster: Cluster) -> None:
    from aimterm.errors import ProtocolError, UnknownInstance
    from aimterm.ipc.client import ControlClient

    up(cluster)
    long_id = "x" * 300
    with ControlClient(cluster.socket, timeout=10) as client:
        for op, args in [
            ("answer", {"id": "echo-1"}), ("answer", {"id": "echo-1", "keys": []}),
            ("answer", {"id": "echo-1", "keys": ["k"] * 65}),
            ("answer", {"id": "echo-1", "keys": [1]}),
            ("answer", {"id": "echo-1", "keys": ["x" * (64 * 1024 + 1)]}),
            ("interrupt", {}), ("interrupt", {"id": long_id}), ("drain", {"id": 3}),
            ("screen", {"id": "echo-1", "lines": 0}), ("screen", {"id": "echo-1", "lines": True}),
            ("turns", {"limit": 1001}), ("turns", {"id": ""}),
            ("scale", {"tool": "echo", "count": 257}),
            ("send", {"prompt": "p", "tags": ["t"] * 65}),
        ]:
            with pytest.raises(ProtocolError):
                client.call(op, **args)
        for kinds in (["nope"], ["state_changed"] * 65, 7):
            with pytest.raises(ProtocolError):
                list(client.stream("events", kinds=kinds))
        with pytest.raises(UnknownInstance):
            client.call("turns", id="echo-9")
        assert client.call("turns", id="echo-1", limit=1) == {"turns": []}
        assert len(client.call("screen", id="echo-1", lines=1)["lines"]) == 1
    assert all(r["state"] == "idle" for r in cluster.status()["instances"])
    cluster.cli("cluster", "down")
