"""A state dir nobody else can touch: what is refused before anything is written, and what
is never followed. Real daemons (``cluster up`` in its own process) on real files; the owner
check, which needs another uid, also as a unit test through the uid seam."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aimterm import statedir
from aimterm.errors import UnsafeRuntimeDir
from aimterm.statedir import (
    check_private_file,
    ensure_private_dir,
    open_private,
    private_dirs,
)
from aimterm.store import Store
from aimterm.term.transcript import TranscriptWriter
from tests.test_daemon import Cluster, up

DIR_FIX = "chmod 700 it if you made it, or choose another --state-dir"
VICTIM_TEXT = "the victim's own words\n"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def private_state(c: Cluster) -> Path:
    """The state dir made the way aimterm would: ours, 0700, empty."""
    c.state.mkdir()
    c.state.chmod(0o700)
    return c.state


def victim(c: Cluster, name: str = "victim.txt") -> Path:
    """A file of someone else's, outside the state dir, that nothing may write."""
    path = c.root / name
    path.write_text(VICTIM_TEXT)
    path.chmod(0o644)
    return path


def refused(c: Cluster, *args: str) -> str:
    """Run ``args`` (with the cluster file); it must fail with exit 24 and one line."""
    out = c.run(*args, "-c", str(c.config))
    assert out.returncode == 24, f"{args}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("aimterm: refusing to use "), out.stderr
    return lines[0]


def refused_by_daemon(c: Cluster) -> str:
    """The daemon run on its own (not through ``cluster up``) refuses too."""
    out = subprocess.run([sys.executable, "-m", "aimterm.daemon", "-c", str(c.config)],
                         env=c.env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 24, out
    assert out.stderr.splitlines()[-1].startswith("aimterm: refusing to use "), out.stderr
    return out.stderr.splitlines()[-1]


# -- the state dir itself ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o777, 0o755, 0o750, 0o701, 0o1777], ids=lambda m: f"{m:04o}")
def test_an_open_state_dir_is_refused_untouched_and_empty(cluster: Cluster, mode: int) -> None:
    cluster.state.mkdir()
    cluster.state.chmod(mode)
    want = (f"aimterm: refusing to use {cluster.state}: mode {stat.S_IMODE(mode):04o} lets "
            f"group or other users in; {DIR_FIX}")
    assert refused(cluster, "cluster", "up", "--detach") == want
    assert refused(cluster, "cluster", "up") == want  # in the foreground: the daemon's check
    assert refused_by_daemon(cluster) == want
    # Not tightened (it may have been planted), and nothing was made in it.
    assert mode_of(cluster.state) == stat.S_IMODE(mode)
    assert os.listdir(cluster.state) == []


def test_a_state_dir_that_is_a_symlink_is_refused(cluster: Cluster) -> None:
    # Even to a private dir of ours: whoever made the link chose where we would write.
    real = cluster.root / "real"
    real.mkdir(mode=0o700)
    cluster.state.symlink_to(real)
    line = refused(cluster, "cluster", "up", "--detach")
    assert line == (f"aimterm: refusing to use {cluster.state}: it is a symbolic link (to "
                    f"{real}); use the real directory or choose another --state-dir")
    assert refused_by_daemon(cluster) == line
    # --state-dir is not resolved past the link either.
    out = cluster.run("cluster", "up", "--detach", "--state-dir", str(cluster.state))
    assert out.returncode == 24 and out.stderr.strip() == line
    assert os.listdir(real) == []


def test_a_state_dir_that_is_a_file_is_refused(cluster: Cluster) -> None:
    cluster.state.write_text("")
    cluster.state.chmod(0o600)
    assert refused(cluster, "cluster", "up", "--detach") == (
        f"aimterm: refusing to use {cluster.state}: not a directory; move it away or choose "
        f"another --state-dir")
    assert cluster.state.read_text() == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a dir to another uid")
def test_a_state_dir_of_another_uid_is_refused_before_anything_is_made(
        cluster: Cluster) -> None:
    private_state(cluster)
    os.chown(cluster.state, 65534, 65534)
    assert refused(cluster, "cluster", "up", "--detach") == (
        f"aimterm: refusing to use {cluster.state}: owned by uid 65534, not by you (uid 0); "
        f"choose another --state-dir")
    assert os.listdir(cluster.state) == []


# -- links planted in a private state dir -----------------------------------------------------


@pytest.mark.parametrize("name", ["daemon.log", "aimterm.db", "aimterm.db-wal", "aimterm.db-shm"])
def test_a_planted_file_link_is_refused_and_never_written_through(cluster: Cluster,
                                                                  name: str) -> None:
    state = private_state(cluster)
    target = victim(cluster)
    (state / name).symlink_to(target)
    want = (f"aimterm: refusing to use {state / name}: it is a symbolic link (to {target}); "
            f"remove it (aimterm never makes one)")
    assert refused(cluster, "cluster", "up", "--detach") == want
    assert refused_by_daemon(cluster) == want
    assert target.read_text() == VICTIM_TEXT and mode_of(target) == 0o644
    assert os.listdir(state) == [name]  # no log, no database, no socket


def test_a_planted_logs_link_is_refused_and_the_other_dir_stays_empty(cluster: Cluster) -> None:
    state = private_state(cluster)
    other = cluster.root / "other"
    other.mkdir(mode=0o700)
    (state / "logs").symlink_to(other)
    line = refused(cluster, "cluster", "up", "--detach")
    assert line.startswith(f"aimterm: refusing to use {state / 'logs'}: it is a symbolic link")
    assert os.listdir(other) == []


def test_an_open_logs_dir_is_refused_not_tightened(cluster: Cluster) -> None:
    state = private_state(cluster)
    (state / "logs").mkdir()
    (state / "logs").chmod(0o755)
    assert refused(cluster, "cluster", "up", "--detach") == (
        f"aimterm: refusing to use {state / 'logs'}: mode 0755 lets group or other users in; "
        f"{DIR_FIX}")
    assert mode_of(state / "logs") == 0o755


def test_a_planted_transcript_link_is_moved_aside_never_written_through(
        cluster: Cluster) -> None:
    """A start moves the previous transcript to ``.cast.1`` (renaming the link, not its
    target), then makes a new private file: the victim is untouched."""
    state = private_state(cluster)
    (state / "logs").mkdir(mode=0o700)
    target = victim(cluster)
    cast = state / "logs" / "echo-1.cast"
    cast.symlink_to(target)
    up(cluster)
    assert cluster.cli("send", "--to", "echo-1", "hi").stdout == "echo: hi\n"
    cluster.cli("cluster", "down")
    assert target.read_text() == VICTIM_TEXT and mode_of(target) == 0o644
    assert os.readlink(f"{cast}.1") == str(target)
    assert not cast.is_symlink() and mode_of(cast) == 0o600 and "echo: hi" in cast.read_text()


def test_a_dangling_transcript_link_is_refused_and_the_instance_says_why(
        cluster: Cluster) -> None:
    """A link to nothing yet (the victim would be created through it): the instance fails to
    start and ends FATAL saying why; nothing is made at the link's end; the other serves."""
    state = private_state(cluster)
    (state / "logs").mkdir(mode=0o700)
    target = cluster.root / "would-be-made"
    cast = state / "logs" / "echo-1.cast"
    cast.symlink_to(target)
    out = cluster.cli("cluster", "up", "--detach", timeout=90)
    assert out.stdout.strip().endswith(str(cluster.socket))
    rows = {r["id"]: r for r in cluster.status()["instances"]}
    assert rows["echo-1"]["state"] == "fatal", rows
    assert (f"refusing to use {cast}: it is a symbolic link (to {target}); remove it"
            in rows["echo-1"]["fatal_reason"]), rows["echo-1"]
    assert cluster.cli("send", "--to", "echo-2", "hi").stdout == "echo: hi\n"
    cluster.cli("cluster", "down")
    assert not os.path.exists(target) and os.path.islink(cast)


# -- what a normal run leaves ---------------------------------------------------------------------


def test_everything_in_the_state_dir_is_private_whatever_the_umask(cluster: Cluster) -> None:
    """With umask 0 (every new file 0666, dir 0777 unless aimterm sets the mode itself)."""
    out = subprocess.run([sys.executable, "-m", "aimterm", "cluster", "up", "--detach",
                          "-c", str(cluster.config)], env=cluster.env, capture_output=True,
                         text=True, timeout=90, umask=0)
    assert out.returncode == 0, out
    assert cluster.cli("send", "hi").stdout == "echo: hi\n"
    state = cluster.state
    assert mode_of(state) == 0o700
    assert mode_of(state / "logs") == 0o700
    assert mode_of(state / "aimterm.db") == 0o600
    assert mode_of(state / "daemon.log") == 0o600
    casts = sorted(p.name for p in (state / "logs").glob("*.cast"))
    assert casts == ["echo-1.cast", "echo-2.cast"]
    entries = {p: mode_of(p) for p in state.rglob("*")}
    assert {p.name: oct(m) for p, m in entries.items() if m & 0o077} == {}
    assert all(m == 0o600 for p, m in entries.items() if p.is_file() and not p.is_symlink())
    assert os.lstat(state).st_uid == os.geteuid()
    assert all(os.lstat(p).st_uid == os.geteuid() for p in entries)
    cluster.cli("cluster", "down")


def test_a_second_up_accepts_what_the_first_left(cluster: Cluster) -> None:
    up(cluster)
    cluster.cli("cluster", "down")
    up(cluster)
    assert cluster.cli("send", "again").stdout == "echo: again\n"
    cluster.cli("cluster", "down")


# -- the checks, in process -----------------------------------------------------------------------


@pytest.fixture
def umask0() -> Iterator[None]:
    """Every new file 0666 and dir 0777, unless the code sets the mode itself."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_missing_parents_are_made_0700_exactly(tmp_path: Path, umask0: None) -> None:
    target = tmp_path / "a" / "b" / "state"
    before = mode_of(tmp_path)
    assert ensure_private_dir(target) == target
    for folder in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert mode_of(folder) == 0o700
    assert mode_of(tmp_path) == before  # an existing parent is not ours to change
    fd = open_private(target / "f", os.O_WRONLY)
    os.close(fd)
    assert mode_of(target / "f") == 0o600


def test_private_dirs_leaves_an_existing_dir_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    private_dirs(shared / "logs")
    assert mode_of(shared) == 0o755 and mode_of(shared / "logs") == 0o700


def test_another_owner_is_refused_through_the_uid_seam(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    mine = folder / "aimterm.db"
    mine.write_text("data")
    mine.chmod(0o600)
    real = os.geteuid()
    other = real + 1000
    ensure_private_dir(folder)  # ours: fine
    monkeypatch.setattr(statedir, "our_uid", lambda: other)
    with pytest.raises(UnsafeRuntimeDir) as info:
        ensure_private_dir(folder)
    assert str(info.value) == (f"refusing to use {folder}: owned by uid {real}, not by you "
                               f"(uid {other}); choose another --state-dir")
    assert info.value.code == "unsafe_runtime_dir" and info.value.exit_code == 24
    for check in (lambda: check_private_file(mine),
                  lambda: open_private(mine, os.O_WRONLY | os.O_TRUNC)):
        with pytest.raises(UnsafeRuntimeDir, match=f"owned by uid {real}, not by you"):
            check()
    assert mine.read_text() == "data"  # refused before the truncation


def test_an_open_existing_file_is_refused_not_truncated(tmp_path: Path) -> None:
    path = tmp_path / "x.cast"
    path.write_text("old run\n")
    path.chmod(0o644)
    with pytest.raises(UnsafeRuntimeDir) as info:
        TranscriptWriter(path, rows=24, cols=80)
    assert str(info.value) == (f"refusing to use {path}: mode 0644 lets group or other users "
                               f"in; chmod 600 it if you made it, or remove it")
    assert path.read_text() == "old run\n" and mode_of(path) == 0o644


def test_a_transcript_link_or_fifo_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_text(VICTIM_TEXT)
    link = tmp_path / "a.cast"
    link.symlink_to(target)
    with pytest.raises(UnsafeRuntimeDir, match="it is a symbolic link"):
        TranscriptWriter(link, rows=24, cols=80)
    dangling = tmp_path / "b.cast"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(UnsafeRuntimeDir, match="it is a symbolic link"):
        TranscriptWriter(dangling, rows=24, cols=80)
    assert not (tmp_path / "nowhere").exists()
    fifo = tmp_path / "c.cast"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(UnsafeRuntimeDir, match="not a regular file"):  # and it did not block
        TranscriptWriter(fifo, rows=24, cols=80)
    assert target.read_text() == VICTIM_TEXT


def test_a_new_transcript_is_0600_whatever_the_umask(tmp_path: Path, umask0: None) -> None:
    w = TranscriptWriter(tmp_path / "logs" / "i.cast", rows=24, cols=80)
    w.output(b"hi")
    w.close()
    assert mode_of(tmp_path / "logs") == 0o700 and mode_of(tmp_path / "logs" / "i.cast") == 0o600


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_the_store_refuses_a_link_among_its_files(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / "victim"
    target.write_text(VICTIM_TEXT)
    db = tmp_path / "aimterm.db"
    Path(f"{db}{suffix}").symlink_to(target)
    with pytest.raises(UnsafeRuntimeDir, match="it is a symbolic link"):
        Store(db)
    assert target.read_text() == VICTIM_TEXT


def test_the_store_refuses_an_open_database(tmp_path: Path) -> None:
    db = tmp_path / "aimterm.db"
    Store(db).close()
    db.chmod(0o644)
    with pytest.raises(UnsafeRuntimeDir, match="mode 0644 lets group or other users in"):
        Store(db)
