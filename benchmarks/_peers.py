"""Peer drivers for ``benchmarks/fleet.py``: a tmux server on a private socket driven by
``tmux`` client calls and a ``capture-pane`` poller, and raw pexpect children.

Nothing here imports aimterm, so the memory figures of the peers (measured in their own
subprocess) do not include it.

tmux, as tmux-based agent managers use it: one ``tmux`` client call per action
(``new-session``/``new-window`` to start, ``send-keys -l TEXT ; send-keys Enter`` to type a
prompt, ``capture-pane -p`` to read a pane), and one poller thread that sweeps
``capture-pane`` over the panes it watches every tick. tmux is the terminal here, so it answers
the programs' cursor position queries itself.

pexpect, tuned: ``delaybeforesend = None`` and ``delayafterread = None`` (its defaults sleep
50 ms before every send and 0.1 ms after every read), one thread per child.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

TMUX = shutil.which("tmux") or "/usr/bin/tmux"
DEMO_COMMAND = [sys.executable, "-m", "aimterm.demo_agent"]
DEMO_READY = "? for shortcuts"
CPR_QUERY = b"\x1b[6n"
CPR_ANSWER = b"\x1b[1;1R"
ROWS, COLS = 30, 120

_sockets = itertools.count(1)


class TmuxError(RuntimeError):
    pass


class Tmux:
    """A tmux server of our own (``tmux -L <name> -f /dev/null``). Every call is one client
    process, as a tmux-based manager makes it. ``kill()`` ends the server and every pane."""

    def __init__(self) -> None:
        self.socket = f"aimterm-fleet-{os.getpid()}-{next(_sockets)}"
        self.base = [TMUX, "-L", self.socket, "-f", "/dev/null"]
        # Where tmux puts a -L socket; removed after kill-server (tmux leaves the file behind).
        self.socket_path = os.path.join(os.environ.get("TMUX_TMPDIR") or "/tmp",
                                        f"tmux-{os.getuid()}", self.socket)
        self.started = False
        self.panes: list[str] = []

    def run(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run([*self.base, *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace")
        if check and proc.returncode != 0:
            raise TmuxError(f"tmux {' '.join(args[:2])} failed ({proc.returncode}): "
                            f"{proc.stderr.strip()[:300]}")
        return proc.stdout

    @staticmethod
    def _env_args(env: Mapping[str, str]) -> list[str]:
        out: list[str] = []
        for key, value in env.items():
            out += ["-e", f"{key}={value}"]
        return out

    def new_pane(self, command: Sequence[str], *, cwd: str, env: Mapping[str, str]) -> str:
        """Start ``command`` in a new window (the first call starts the server with
        ``new-session -d``); return its pane id (``%N``)."""
        shell = shlex.join(command)
        if not self.started:
            out = self.run("new-session", "-d", "-s", "fleet", "-x", str(COLS), "-y", str(ROWS),
                           "-P", "-F", "#{pane_id}", "-c", cwd, *self._env_args(env), shell)
            self.started = True
        else:
            out = self.run("new-window", "-d", "-t", "fleet", "-P", "-F", "#{pane_id}",
                           "-c", cwd, *self._env_args(env), shell)
        pane = out.strip()
        self.panes.append(pane)
        return pane

    def capture(self, pane: str) -> str | None:
        proc = subprocess.run([*self.base, "capture-pane", "-p", "-t", pane],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace")
        return proc.stdout if proc.returncode == 0 else None

    def send_line(self, pane: str, text: str) -> None:
        """One client call: ``send-keys -l TEXT ; send-keys Enter``."""
        self.run("send-keys", "-t", pane, "-l", text, ";", "send-keys", "-t", pane, "Enter")

    def send_text(self, pane: str, text: str) -> None:
        self.run("send-keys", "-t", pane, "-l", text)

    def send_enter(self, pane: str) -> None:
        self.run("send-keys", "-t", pane, "Enter")

    def server_pid(self) -> int | None:
        if not self.started:
            return None
        try:
            return int(self.run("display-message", "-p", "#{pid}").strip())
        except (TmuxError, ValueError):
            return None

    def kill(self) -> None:
        if self.started:
            self.run("kill-server", check=False)
            self.started = False
        if os.path.exists(self.socket_path):
            probe = subprocess.run([*self.base, "list-sessions"], stdin=subprocess.DEVNULL,
                                   capture_output=True)
            if probe.returncode != 0:  # no server behind it any more
                try:
                    os.unlink(self.socket_path)
                except OSError:
                    pass


class Poller:
    """One thread sweeping ``capture-pane`` over the watched panes every ``interval`` s.

    ``check(pane, text)`` runs for each capture; when it returns True the pane leaves the
    watch set (the callback may put it back with :meth:`watch`). With ``watch_all`` every
    pane is captured each tick forever (an idle watcher). ``cpu_s`` is the poller thread's own
    CPU time (``time.thread_time``) while it ran."""

    def __init__(self, tmux: Tmux, interval: float,
                 check: Callable[[str, str], bool] | None = None,
                 watch_all: Iterable[str] = ()) -> None:
        self.tmux = tmux
        self.interval = interval
        self.check = check
        self.fixed = list(watch_all)
        self.watched: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sweeps = 0
        self.captures = 0
        self.cpu_s = 0.0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="tmux-poller", daemon=True)

    def watch(self, pane: str) -> None:
        with self.lock:
            self.watched.append(pane)

    def start(self) -> Poller:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)

    def _run(self) -> None:
        cpu0 = time.thread_time()
        next_tick = time.perf_counter()
        try:
            while not self.stopping.is_set():
                if self.fixed:
                    panes = self.fixed
                else:
                    with self.lock:
                        panes = list(self.watched)
                for pane in panes:
                    text = self.tmux.capture(pane)
                    self.captures += 1
                    if text is not None and self.check is not None and self.check(pane, text):
                        with self.lock:
                            try:
                                self.watched.remove(pane)
                            except ValueError:
                                pass
                self.sweeps += 1
                next_tick += self.interval
                delay = next_tick - time.perf_counter()
                if delay > 0:
                    self.stopping.wait(delay)
                else:  # the sweep overran the tick: go again at once, as a poller does
                    next_tick = time.perf_counter()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc
        finally:
            self.cpu_s = time.thread_time() - cpu0


# -- pexpect --------------------------------------------------------------------------------------


def pexpect_spawn(command: Sequence[str], *, cwd: str, env: Mapping[str, str],
                  timeout: float = 30.0) -> Any:
    import pexpect

    full_env = dict(os.environ)
    full_env.update(env)
    child = pexpect.spawn(command[0], list(command[1:]), cwd=cwd, env=full_env, encoding=None,
                          timeout=timeout, dimensions=(ROWS, COLS))
    child.delaybeforesend = None
    child.delayafterread = None
    return child


def pexpect_demo_ready(command: Sequence[str], *, cwd: str, env: Mapping[str, str],
                       timeout: float = 30.0) -> Any:
    """Spawn the demo agent, answer its cursor query, wait for the idle status line."""
    child = pexpect_spawn(command, cwd=cwd, env=env, timeout=timeout)
    try:
        child.expect_exact(CPR_QUERY)
        child.send(CPR_ANSWER)
        child.expect_exact(DEMO_READY.encode())
    except BaseException:
        close_pexpect([child])
        raise
    return child


def close_pexpect(children: Iterable[Any]) -> None:
    """``close(force=True)`` on each child, in parallel (each close sleeps 0.1 s or more)."""
    children = [c for c in children if c is not None]
    if not children:
        return

    def close(child: Any) -> None:
        try:
            child.close(force=True)
        except Exception:  # noqa: BLE001 - try a plain kill
            try:
                os.kill(child.pid, 9)
                os.waitpid(child.pid, 0)
            except OSError:
                pass

    with concurrent.futures.ThreadPoolExecutor(min(32, len(children))) as ex:
        list(ex.map(close, children))
