"""Hostile YAML at every place a file is loaded: ``aimterm adapter validate``, the cluster
file, and the daemon (``cluster up``, ``scale``). An alias bomb, brackets nested 100 000 deep
and a file past the size bound each get one line ``path:line: yaml: ...``, a non-zero exit and
no traceback, quickly and in little memory; and SIGTERM still stops a process mid-load."""

from __future__ import annotations

import re
import resource
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from aimterm.adapter.yamlfile import MAX_YAML_BYTES
from aimterm.config import load_cluster_config
from aimterm.errors import ConfigError
from tests.test_daemon import Cluster, up

#: An address-space ceiling for the CLI under test: plenty for Python and aimterm (they need
#: well under 100 MiB), a small fraction of what expanding the bomb would take.
MEMORY_CAP = 256 << 20


def alias_bomb(levels: int = 9, head: str = "name: bomb\ncommand: [x]\n") -> str:
    """Nine levels of nine aliases each: 9**9 (387 million) strings once expanded."""
    lines = [head.rstrip("\n"), 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", '
                                '"lol", "lol"]']
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


BOMBS = {
    "alias-bomb": (alias_bomb(), "expands into more than 10000 values"),
    "deep-list": ("[" * 100_000 + "]" * 100_000 + "\n", "nested more than 64 levels deep"),
    "deep-mapping": ("{a: " * 100_000 + "1" + "}" * 100_000 + "\n",
                     "nested more than 64 levels deep"),
    "deep-block-list": ("".join(" " * i + "-\n" for i in range(100)),
                        "nested more than 64 levels deep"),
    "oversized": ("name: big\ncommand: [x]\n" + "# padding\n" * (MAX_YAML_BYTES // 10 + 10),
                  f"the file goes on past {MAX_YAML_BYTES} bytes"),
}


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _one_line_error(stderr: str, path: Path, expected: str, prefix: str = "") -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr[-3000:]
    assert re.match(rf"{re.escape(prefix + str(path))}:\d+: yaml: ", lines[0]), lines[0]
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_adapter_validate_refuses_it_quickly_in_little_memory(tmp_path: Path, kind: str) -> None:
    text, expected = BOMBS[kind]
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text)
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "aimterm", "adapter", "validate", str(path)],
                         capture_output=True, text=True, timeout=60, preexec_fn=_cap_memory)
    wall = time.monotonic() - start
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stdout + out.stderr
    _one_line_error(out.stderr, path, expected)
    assert wall < 5.0, f"{kind}: {wall:.1f}s"


def test_sigterm_stops_validate_in_the_middle_of_a_load(tmp_path: Path) -> None:
    # Just under the size bound: a megabyte of blank lines (the slowest input to scan that
    # the bound lets through, about a second each), then a bomb. Thirty of them take half a
    # minute, so the signal lands in the middle of a load.
    bomb = alias_bomb()
    path = tmp_path / "slow-bomb.yaml"
    path.write_text("\n" * (MAX_YAML_BYTES - len(bomb) - 16) + bomb)
    proc = subprocess.Popen([sys.executable, "-m", "aimterm", "adapter", "validate",
                             *[str(path)] * 30],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_cap_memory)
    try:
        time.sleep(1.5)
        assert proc.poll() is None, "the loads finished before the signal"
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, stderr = proc.communicate(timeout=10)
        assert time.monotonic() - sent < 2.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGTERM
    assert "Traceback" not in stderr


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_the_cluster_loader_refuses_it_in_little_memory(tmp_path: Path, kind: str) -> None:
    text, expected = BOMBS[kind]
    path = tmp_path / "cluster.yaml"
    path.write_text(text.replace("name: bomb\ncommand: [x]\n", "state_dir: state\n")
                    .replace("name: big\ncommand: [x]\n", "state_dir: state\n"))
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as caught:
            load_cluster_config(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _one_line_error(str(caught.value), path, expected)
    assert peak < 32 << 20, f"{kind}: {peak >> 20} MiB"


def _no_traceback(c: Cluster) -> None:
    log = c.state / "daemon.log"
    assert "Traceback" not in (log.read_text(errors="replace") if log.exists() else "")


def test_cluster_up_refuses_a_bomb_cluster_file(cluster: Cluster) -> None:
    cluster.config.write_text(alias_bomb(head="state_dir: state\n"))
    out = cluster.run("cluster", "up", "--detach", "-c", str(cluster.config), timeout=30)
    assert out.returncode == 2
    _one_line_error(out.stderr, cluster.config, "expands into more than", prefix="aimterm: ")
    assert not cluster.socket.exists()
    # The daemon itself, started directly on the file, says the same and exits.
    direct = subprocess.run([sys.executable, "-m", "aimterm.daemon", "-c", str(cluster.config)],
                            capture_output=True, text=True, env=cluster.env, timeout=30)
    assert direct.returncode == 2
    _one_line_error(direct.stderr, cluster.config, "expands into more than", prefix="aimterm: ")


def test_cluster_up_refuses_a_bomb_adapter(cluster: Cluster) -> None:
    bomb = cluster.root / "adapters" / "bomb.yaml"
    bomb.write_text(alias_bomb())
    cluster.config.write_text("state_dir: state\ninstances:\n  - adapter: bomb\n    count: 1\n")
    out = cluster.run("cluster", "up", "--detach", "-c", str(cluster.config), timeout=60)
    assert out.returncode == 2, out.stderr
    _one_line_error(out.stderr, bomb, "expands into more than", prefix="aimterm: ")
    _no_traceback(cluster)


def test_scale_refuses_a_bomb_adapter_and_the_daemon_goes_on(cluster: Cluster) -> None:
    up(cluster)
    bomb = cluster.root / "adapters" / "bomb.yaml"
    bomb.write_text(alias_bomb())
    start = time.monotonic()
    out = cluster.run("cluster", "scale", "bomb", "1", "-c", str(cluster.config))
    assert time.monotonic() - start < 10
    assert out.returncode == 2, out.stderr
    _one_line_error(out.stderr, bomb, "expands into more than", prefix="aimterm: ")
    assert [r["id"] for r in cluster.status()["instances"]] == ["echo-1", "echo-2"]
    _no_traceback(cluster)


def test_numbers_too_large_for_a_timer_are_refused(tmp_path: Path) -> None:
    # Finite but past what a timer or a sleep takes: refused in the file, not an
    # OverflowError in the daemon later.
    from aimterm.adapter.loader import load_text

    with pytest.raises(ConfigError, match=r"x.yaml:3: turn_timeout_s: expected a number <= "):
        load_text("extends: demo\nname: x\nturn_timeout_s: 1.0e+300\n", "x.yaml")
    with pytest.raises(ConfigError, match=r"x.yaml:3: settle_ms: expected an integer <= "):
        load_text(f"extends: demo\nname: x\nsettle_ms: {2**40}\n", "x.yaml")
    path = tmp_path / "cluster.yaml"
    path.write_text("restart: {backoff_s: 1.0e+300}\n")
    with pytest.raises(ConfigError, match=r"cluster.yaml:1: restart.backoff_s: expected a number"
                                          r" <= 2592000 \(30 days in seconds\)"):
        load_cluster_config(path)
    path.write_text("queue_size: 99999999999\n")
    with pytest.raises(ConfigError, match=r"cluster.yaml:1: queue_size: expected an integer <= "):
        load_cluster_config(path)
