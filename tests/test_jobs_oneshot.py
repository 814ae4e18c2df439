"""One-shot runs on real processes under real PTYs: exit codes, signals, the timeout and
cancel ending the whole process group, spawn errors, plain-text output, terminal queries,
the environment; and the demo agent's ``-p`` mode, the one-shot form of the demo adapter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from aimterm.adapter.loader import load_text
from aimterm.adapter.registry import load_adapter
from aimterm.demo_agent import reply_for
from aimterm.errors import SpawnError
from aimterm.jobs.oneshot import (
    KILL_GRACE_S,
    MAX_OUTPUT,
    OneShotRun,
    oneshot_cwd,
    oneshot_env,
    run_oneshot,
)
from aimterm.jobs.recipe import oneshot_argv
from aimterm.jobs.spec import Job
from aimterm.session import Session
from tests.conftest import REPO

PY = sys.executable


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(REPO) + os.pathsep + out.get("PYTHONPATH", "")
    out.pop("AIMTERM_DEMO_THINK", None)
    out.update(extra)
    return out


def run(argv: list[str], *, timeout_s: float = 20.0, cwd: Path | None = None,
        cancel: threading.Event | None = None, **kwargs: int) -> OneShotRun:
    return run_oneshot(argv, cwd=str(cwd) if cwd else None, env=env(), timeout_s=timeout_s,
                       cancel=cancel, **kwargs)


def gone(pid: int, since: float) -> bool:
    """Whether the process ``pid`` that existed at ``since`` (epoch seconds) is gone, or
    dying: a straggler of the group is sent SIGKILL as the run ends, and may take a moment
    to be a zombie."""
    deadline = time.monotonic() + 2.0
    while True:
        try:
            proc = psutil.Process(pid)
            if proc.create_time() > since + 1 or proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# Exit, signals, timeout, cancel
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 7, 255])
def test_exit_codes(code: int) -> None:
    result = run(["bash", "-c", f"echo bye; exit {code}"])
    assert (result.exit_code, result.signal, result.timed_out, result.cancelled) == (
        code, None, False, False)
    assert result.output == "bye"
    assert result.argv == ("bash", "-c", f"echo bye; exit {code}")
    assert 0 < result.duration_s < 10


def test_a_signal_death() -> None:
    result = run([PY, "-c", "import os, signal; print('going', flush=True); "
                            "os.kill(os.getpid(), signal.SIGSEGV)"])
    assert (result.exit_code, result.signal) == (None, signal.SIGSEGV)
    assert not result.timed_out and not result.cancelled
    assert result.output == "going"


STUBBORN = """\
import os, signal, subprocess, sys, time
if sys.argv[1] == "leader-ignores":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time\\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
    "signal.signal(signal.SIGHUP, signal.SIG_IGN)\\n"
    "time.sleep(120)"])
with open("pids.tmp", "w") as fh:
    fh.write(f"{os.getpid()} {child.pid}")
os.replace("pids.tmp", "pids")
print("both running", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("mode", ["child-ignores", "leader-ignores"])
def test_timeout_ends_the_whole_group(tmp_path: Path, mode: str) -> None:
    """SIGTERM to the group; whoever ignores it gets SIGKILL: nothing is left."""
    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN, encoding="utf-8")
    since = time.time()
    result = run([PY, str(script), mode], timeout_s=3.0, cwd=tmp_path)
    assert result.timed_out and not result.cancelled
    assert result.output == "both running"
    leader, child = map(int, (tmp_path / "pids").read_text().split())
    assert gone(leader, since) and gone(child, since)
    if mode == "leader-ignores":
        assert (result.exit_code, result.signal) == (None, signal.SIGKILL)
        assert result.duration_s >= 3.0 + KILL_GRACE_S - 0.1
    else:
        assert (result.exit_code, result.signal) == (None, signal.SIGTERM)
        assert result.duration_s < 3.0 + KILL_GRACE_S


def test_background_children_do_not_outlive_a_run(tmp_path: Path) -> None:
    since = time.time()
    result = run(["bash", "-c", "sleep 120 & echo $! > bg.pid; echo started"], cwd=tmp_path)
    assert (result.exit_code, result.output, result.timed_out) == (0, "started", False)
    assert gone(int((tmp_path / "bg.pid").read_text()), since)


def test_cancel() -> None:
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    try:
        result = run(["bash", "-c", "echo waiting; sleep 60"], cancel=cancel)
    finally:
        timer.cancel()
        timer.join(5)
    assert result.cancelled and not result.timed_out
    assert result.signal == signal.SIGTERM and result.exit_code is None
    assert result.output == "waiting"
    assert 0.4 < result.duration_s < 5


def test_cancelled_before_it_starts_runs_nothing(tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    result = run(["bash", "-c", "touch ran"], cwd=tmp_path, cancel=cancel)
    assert result == OneShotRun(("bash", "-c", "touch ran"), None, None, "", timed_out=False,
                                cancelled=True, duration_s=0.0)
    assert not (tmp_path / "ran").exists()


def test_a_program_that_ends_in_time_is_neither_timed_out_nor_cancelled() -> None:
    cancel = threading.Event()
    result = run(["true"], cancel=cancel, timeout_s=10)
    assert (result.exit_code, result.timed_out, result.cancelled, result.output) == (
        0, False, False, "")


def test_missing_program_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SpawnError) as info:
        run(["no-such-program-aimterm", "-p", "x"])
    assert str(info.value) == ("cannot start 'no-such-program-aimterm': command "
                               "'no-such-program-aimterm' not found on PATH")
    assert info.value.argv == ["no-such-program-aimterm", "-p", "x"]
    with pytest.raises(SpawnError, match="working directory .* does not exist"):
        run(["true"], cwd=tmp_path / "nope")
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        run(["true"], timeout_s=0)


# ---------------------------------------------------------------------------------------------
# Output and the terminal
# ---------------------------------------------------------------------------------------------


def test_output_with_escapes_comes_back_as_plain_text() -> None:
    script = (r"printf '\033]0;a title\007\033[1;32mgreen\033[0m plain\n'; "
              r"printf 'progress 10%%\rprogress 100%%\n'; "
              r"printf '\033[2K\033[?25lhidden cursor\033[?25h\n'; "
              r"printf 'x\bab\n\n\n  \n'")
    result = run(["bash", "-c", script])
    assert result.output == "green plain\nprogress 100%\nhidden cursor\nab"


def test_output_keeps_the_last_256_kib(tmp_path: Path) -> None:
    result = run([PY, "-c", "for i in range(300000): print(i)"], timeout_s=60)
    assert result.exit_code == 0
    assert len(result.output.encode()) <= MAX_OUTPUT
    lines = result.output.split("\n")
    assert lines[-1] == "299999"
    assert len(lines) > 30000
    assert [int(line) for line in lines] == list(range(300000 - len(lines), 300000))


CPR = """\
import os, select, sys, termios, tty
print("line one")
print("line two", flush=True)
saved = termios.tcgetattr(0)
tty.setraw(0)
buf = b""
try:
    os.write(1, b"\\x1b[6n")
    while not buf.endswith(b"R"):
        ready, _, _ = select.select([0], [], [], 2.0)
        if not ready:
            break
        buf += os.read(0, 64)
finally:
    termios.tcsetattr(0, termios.TCSAFLUSH, saved)
if not buf.endswith(b"R"):
    print("nobody answered")
    sys.exit(3)
print("cursor at", buf[2:-1].decode())
"""


def test_a_cursor_position_query_is_answered(tmp_path: Path) -> None:
    script = tmp_path / "cpr.py"
    script.write_text(CPR, encoding="utf-8")
    result = run([PY, str(script)])
    assert (result.exit_code, result.output) == (0, "line one\nline two\ncursor at 3;1")


def test_the_demo_agent_interactive_mode_gets_its_answer(tmp_path: Path) -> None:
    """Without an answer it exits 3 at once; answered, it shows its idle screen and runs
    until the timeout ends it."""
    argv = [PY, "-m", "aimterm.demo_agent", "--no-first-run", "--home", str(tmp_path / "h")]
    result = run(argv, timeout_s=3.0, cwd=tmp_path)
    assert result.timed_out
    assert result.exit_code == 128 + signal.SIGTERM  # its own handler: terminal restored
    assert "? for shortcuts" in result.output
    assert "did not answer the cursor position query" not in result.output


def test_terminal_size_and_exact_environment() -> None:
    result = run_oneshot([PY, "-c", "import os, shutil; print(*shutil.get_terminal_size()); "
                               "print(os.environ['ONLY_HERE'], os.environ.get('TERM', 'unset'))"],
                         cwd=None, env={"PATH": os.environ["PATH"], "ONLY_HERE": "yes"},
                         timeout_s=10)
    assert result.output == "200 40\nyes unset"
    result = run(["stty", "size"], rows=12, cols=34)
    assert result.output == "12 34"


# ---------------------------------------------------------------------------------------------
# Environment and cwd of a job's run
# ---------------------------------------------------------------------------------------------

LAYERED = """\
command: [tool]
cwd: /adapter/dir
env: {FROM_ADAPTER: a, LAYER: adapter, PY: "{python}"}
env_remove: [DROP_ME]
terminal: {term: vt100}
states: [{state: idle, any: x}]
jobs:
  oneshot: [tool, "{prompt}"]
  oneshot_env: {LAYER: recipe, FROM_RECIPE: "in {cwd}", BOTH: recipe}
"""


def test_oneshot_env_layers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DROP_ME", "1")
    monkeypatch.setenv("LAYER", "process")
    monkeypatch.setenv("COLUMNS", "80")
    adapter = load_text(LAYERED, "layered.yaml")
    work = Job(id="j1", tool="layered", prompt="p", cwd=str(tmp_path),
               env={"BOTH": "job", "FROM_JOB": "j"})
    got = oneshot_env(adapter, work)
    assert "DROP_ME" not in got and "COLUMNS" not in got and "AIMTERM_INSTANCE" not in got
    assert got["PATH"] == os.environ["PATH"]
    assert (got["FROM_ADAPTER"], got["PY"], got["TERM"]) == ("a", sys.executable, "vt100")
    assert (got["LAYER"], got["FROM_RECIPE"]) == ("recipe", f"in {tmp_path}")
    assert (got["BOTH"], got["FROM_JOB"]) == ("job", "j")
    assert oneshot_cwd(adapter, work) == str(tmp_path)
    assert oneshot_cwd(adapter, Job(id="j2", tool="layered", prompt="p")) == "/adapter/dir"
    assert oneshot_cwd(load_adapter("bash"), Job(id="j3", tool="bash", prompt="p")) is None


# ---------------------------------------------------------------------------------------------
# The demo agent's print mode
# ---------------------------------------------------------------------------------------------


def demo_job(tmp_path: Path, prompt: str) -> OneShotRun:
    adapter = load_adapter("demo")
    work = Job(id="d", tool="demo", prompt=prompt, cwd=str(tmp_path),
               env={"PYTHONPATH": str(REPO), "AIMTERM_DEMO_HOME": str(tmp_path / "home")})
    argv = oneshot_argv(adapter.jobs, work)
    assert argv is not None
    return run_oneshot(argv, cwd=oneshot_cwd(adapter, work), env=oneshot_env(adapter, work),
                       timeout_s=30)


def test_demo_agent_print_mode_edits_a_file(tmp_path: Path) -> None:
    (tmp_path / "cart.py").write_text("def fetch(items): return items\n", encoding="utf-8")
    result = demo_job(tmp_path, "edit cart.py: def load(items): return list(items)")
    assert (result.exit_code, result.output) == (0, "Wrote 36 bytes to cart.py")
    assert (tmp_path / "cart.py").read_text() == "def load(items): return list(items)\n"
    assert result.duration_s >= 0.3  # the adapter's AIMTERM_DEMO_THINK
    assert not (tmp_path / "home").exists()  # print mode keeps no state
    result = demo_job(tmp_path, "edit sub/dir/new.py: x = {'a': 1}\ny = 2")
    assert result.exit_code == 0
    assert (tmp_path / "sub/dir/new.py").read_text() == "x = {'a': 1}\ny = 2\n"


@pytest.mark.parametrize("target", ["../escape.py", "ABS/escape.py", "link/x.py"])
def test_demo_agent_print_mode_refuses_paths_outside_the_cwd(tmp_path: Path,
                                                            target: str) -> None:
    work = tmp_path / "work"
    outside = tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    (work / "link").symlink_to(outside)
    target = target.replace("ABS", str(tmp_path))
    result = demo_job(work, f"edit {target}: nope")
    assert result.exit_code == 1
    assert result.output == (f"demo-agent: refusing to edit {target}: it is outside the "
                             f"working directory {work}")
    assert not (tmp_path / "escape.py").exists() and not (outside / "x.py").exists()


def print_mode(*args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "aimterm.demo_agent", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, cwd=cwd, env=env(**extra),
                          timeout=30)


def test_demo_agent_print_mode_needs_no_terminal(tmp_path: Path) -> None:
    for prompt, reply in [("hello\nsecond line", "Echo: hello\nsecond line\n"),
                          ("lines 2", "line 1 of 2\nline 2 of 2\n"),
                          ("fail", "Error: simulated failure\n"),
                          ("-starts with a dash", "Echo: -starts with a dash\n"),
                          ("--print", "Echo: --print\n")]:
        for flag in (["-p", prompt], ["--print", prompt], [f"--print={prompt}"]):
            done = print_mode("--think", "0", *flag, cwd=tmp_path)
            assert (done.returncode, done.stdout, done.stderr) == (0, reply, ""), flag
            assert done.stdout.splitlines() == reply_for(prompt)
    started = time.monotonic()
    done = print_mode("-p", "edit a.txt: text", cwd=tmp_path, AIMTERM_DEMO_THINK="0.5")
    assert time.monotonic() - started >= 0.5
    assert (done.returncode, done.stdout) == (0, "Wrote 5 bytes to a.txt\n")
    assert (tmp_path / "a.txt").read_text() == "text\n"
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        done = print_mode("--think", "0", "-p", "edit ro/f.txt: x", cwd=tmp_path)
    finally:
        (tmp_path / "ro").chmod(0o700)
    if os.geteuid() != 0:
        assert (done.returncode, done.stdout) == (1, "Error: cannot write ro/f.txt: "
                                                     "Permission denied\n")


def test_print_mode_replies_as_the_interactive_mode_does(tmp_path: Path) -> None:
    """The pooled reply (cut from the full-screen UI by the demo adapter) and the one-shot
    output are the same text."""
    prompts = ["lines 3", "hello there\nand more", "edit notes.txt: one"]
    extra = {"AIMTERM_DEMO_THINK": "0.05", "AIMTERM_DEMO_HOME": str(tmp_path / "home")}
    pooled = tmp_path / "pooled"
    pooled.mkdir()
    with Session("demo", cwd=pooled, env=extra) as session:
        replies = [session.send(prompt, timeout=30).reply for prompt in prompts]
    oneshot = tmp_path / "oneshot"
    oneshot.mkdir()
    outputs = [demo_job(oneshot, prompt).output for prompt in prompts]
    assert replies == outputs
    assert (pooled / "notes.txt").read_text() == (oneshot / "notes.txt").read_text() == "one\n"


def test_print_mode_leaves_the_interactive_mode_alone(tmp_path: Path) -> None:
    """Without -p it is the full-screen program still: no terminal, no start."""
    done = print_mode("--think", "0", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "demo-agent: stdin and stdout must be a terminal\n"
