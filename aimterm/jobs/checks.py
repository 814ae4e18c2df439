"""Ground truth for a job: what its acceptance commands say, and which files really changed.

A job succeeds because its commands exit 0 and (when it names files) a file of it changed on
disk — never because the tool said so. Changes are found by content, not by timestamps: a
snapshot hashes the job's files and every file git calls dirty (and notes ``HEAD``, since
some tools commit their edits), and two snapshots are compared.
"""

from __future__ import annotations

import hashlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aimterm.jobs.result import OUTPUT_TAIL_CHARS, AcceptanceResult

__all__ = ["ACCEPTANCE_TIMEOUT_S", "Snapshot", "changed_files", "run_acceptance", "snapshot"]

#: The longest one acceptance command may run (a test suite), unless the caller says.
ACCEPTANCE_TIMEOUT_S = 600.0
#: Git calls are quick; one that hangs (a lock, a prompt) must not hold the job.
_GIT_TIMEOUT_S = 30.0
#: Bytes of a command's output kept while it runs (the result keeps the last characters).
_KEEP_BYTES = 4 * OUTPUT_TAIL_CHARS


@dataclass(frozen=True)
class Snapshot:
    """What the files looked like at one moment: path -> content hash (None: absent)."""

    hashes: Mapping[str, str | None] = field(default_factory=dict)
    head: str | None = None
    repo: str | None = None


def _git(cwd: str, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", cwd, *args], capture_output=True,
                             timeout=_GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.decode("utf-8", "surrogateescape") if out.returncode == 0 else None


def _hash(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha1").hexdigest()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # a directory, no permission: still a state to compare
        return f"error:{exc.errno}"


#: A work tree's top, by a folder in it: a job's folder does not move to another repository,
#: and a snapshot is taken twice per job attempt (each git call costs milliseconds).
_TOPS: dict[str, str] = {}
_TOPS_MAX = 1024
#: Fields before the path in ``git status --porcelain=v2`` entries, by entry kind.
_V2_FIELDS = {"1": 8, "2": 9, "u": 10, "?": 1, "!": 1}


def _top(cwd: str) -> str | None:
    top = _TOPS.get(cwd)
    if top is not None and os.path.exists(os.path.join(top, ".git")):
        return top
    out = _git(cwd, "rev-parse", "--show-toplevel")
    if out is None:
        _TOPS.pop(cwd, None)
        return None
    if len(_TOPS) >= _TOPS_MAX:
        _TOPS.clear()
    _TOPS[cwd] = top = out.strip()
    return top


def snapshot(cwd: str | None, files: Sequence[str] = ()) -> Snapshot:
    """Hash ``files`` (absolute paths) and, when ``cwd`` is in a git work tree, every file
    git reports changed or untracked there."""
    paths = set(files)
    head = repo = None
    if cwd is not None and os.path.isdir(cwd):
        repo = _top(cwd)
        # One call gives both HEAD (``# branch.oid``) and the dirty files.
        status = _git(repo, "status", "--porcelain=v2", "-z", "--branch",
                      "--untracked-files=all") if repo is not None else None
        if status is None:
            repo = None
        entries = iter((status or "").split("\0"))
        for entry in entries:
            if entry.startswith("# branch.oid "):
                oid = entry[len("# branch.oid "):].strip()
                head = oid if oid != "(initial)" else None
                continue
            fields = _V2_FIELDS.get(entry[:1])
            parts = entry.split(" ", fields) if fields else []
            if len(parts) == (fields or 0) + 1:
                assert repo is not None
                paths.add(os.path.join(repo, parts[-1]))
                if entry[:1] == "2":
                    # A rename's source follows as its own entry: hashed as absent, which
                    # is what it is now.
                    paths.add(os.path.join(repo, next(entries, "")))
    return Snapshot({p: _hash(p) for p in sorted(paths)}, head, repo)


def changed_files(before: Snapshot, after: Snapshot) -> list[str]:
    """Files whose content differs between the snapshots, and those a commit in between
    touched (sorted, absolute)."""
    changed = {p for p in set(before.hashes) | set(after.hashes)
               if _content_at(p, before) != _content_at(p, after)}
    if after.repo and before.head != after.head and after.head is not None:
        span = [f"{before.head}..{after.head}"] if before.head else [after.head]
        listed = _git(after.repo, "diff", "--name-only", "-z", *span, "--") if before.head \
            else _git(after.repo, "show", "--name-only", "-z", "--format=", *span)
        changed.update(os.path.join(after.repo, p) for p in (listed or "").split("\0") if p)
    return sorted(changed)


def _content_at(path: str, snap: Snapshot) -> str | None:
    """The file's content hash when ``snap`` was taken. A file the snapshot did not hash was
    clean in git then: its content was the one committed at the snapshot's HEAD."""
    if path in snap.hashes:
        return snap.hashes[path]
    if snap.repo is None or snap.head is None:
        return None
    rel = os.path.relpath(path, snap.repo)
    try:
        blob = subprocess.run(["git", "-C", snap.repo, "cat-file", "blob", f"{snap.head}:{rel}"],
                              capture_output=True, timeout=_GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return hashlib.sha1(blob.stdout).hexdigest() if blob.returncode == 0 else None


def run_acceptance(commands: Sequence[str], *, cwd: str | None, env: Mapping[str, str],
                   timeout_s: float = ACCEPTANCE_TIMEOUT_S,
                   deadline: float | None = None) -> tuple[AcceptanceResult, ...]:
    """Run each command with ``bash -c`` in ``cwd``, in order, stopping at the first that
    fails. Each runs in a process group of its own, killed whole at its timeout (or at the
    monotonic ``deadline``, whichever comes first)."""
    results: list[AcceptanceResult] = []
    for command in commands:
        limit = timeout_s
        if deadline is not None:
            limit = max(0.0, min(limit, deadline - time.monotonic()))
        result = _run_one(command, cwd, env, limit)
        results.append(result)
        if not result.passed:
            break
    return tuple(results)


def _run_one(command: str, cwd: str | None, env: Mapping[str, str],
             timeout_s: float) -> AcceptanceResult:
    started = time.monotonic()
    try:
        proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=dict(env),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        return AcceptanceResult(command, 127, f"cannot run: {exc}", 0.0)
    assert proc.stdout is not None
    kept = bytearray()
    timed_out = False
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        end = started + timeout_s
        while True:
            left = end - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if not sel.select(min(left, 1.0)):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            kept += chunk
            if len(kept) > _KEEP_BYTES:
                del kept[:len(kept) - _KEEP_BYTES]
    if timed_out:
        _kill_group(proc)
    code = _reap(proc)
    proc.stdout.close()
    text = kept.decode("utf-8", "replace")
    if timed_out:
        text += f"\n[killed after {timeout_s:g} s]"
    return AcceptanceResult(command, None if timed_out else code, text,
                            round(time.monotonic() - started, 3))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(2.0)
            return
        except subprocess.TimeoutExpired:
            continue


def _reap(proc: subprocess.Popen[bytes]) -> int:
    try:
        code = proc.wait(5.0)
    except subprocess.TimeoutExpired:  # its output closed but it lives on: end it
        _kill_group(proc)
        code = proc.wait()
    # The command's own children (a test server) go with it: the group is the command's.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return code if code >= 0 else 128 - code


def relative_to(path: str, cwd: str | None) -> str:
    """``path`` relative to ``cwd`` when inside it (for messages), else as it is."""
    if cwd is None:
        return path
    try:
        return str(Path(path).relative_to(cwd))
    except ValueError:
        return path
