"""Running git for plans: one :class:`Git` per directory, every call with a timeout, no
prompt, C-locale messages, and a fixed identity when the repository has none of its own (a
fresh CI machine has no ``user.email``, and commits must still work there).

A failing command raises :class:`GitError` naming the command, its exit status and the last
lines of its stderr.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from aimterm.errors import GitError

__all__ = ["IDENTITY", "Git", "GitError", "branch_exists", "common_dir", "head", "repo_root"]

#: Name and email of commits made where git knows no identity.
IDENTITY = ("aimterm", "aimterm@localhost")
#: Lines of stderr kept in an error.
_TAIL_LINES = 12
#: Variables of the caller that would point git at another repository or index.
_FOREIGN = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX",
            "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE")


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


class Git:
    """git in ``cwd``. ``timeout_s`` bounds each command."""

    def __init__(self, cwd: Path, *, timeout_s: float = 120.0) -> None:
        self.cwd = Path(cwd)
        self.timeout_s = timeout_s
        self._identity: bool | None = None  # None: not looked up yet

    def _needs_identity(self) -> bool:
        if self._identity is None:
            probe = self._exec(["config", "--get", "user.email"], None, None)
            self._identity = probe.returncode != 0 or not probe.stdout.strip()
        return self._identity

    def _exec(self, args: Sequence[str], env: Mapping[str, str] | None,
              input: str | None) -> subprocess.CompletedProcess[str]:
        full = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
        full.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_EDITOR": ":",
                     "GIT_MERGE_AUTOEDIT": "no"})
        if env:
            full.update(env)
        argv = ["git", *args]
        try:
            return subprocess.run(argv, cwd=self.cwd, env=full, input=input, text=True,
                                  encoding="utf-8", errors="surrogateescape",
                                  capture_output=True, timeout=self.timeout_s, check=False,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) \
                else (exc.stderr or "")
            raise GitError(f"{_shown(argv)} timed out after {self.timeout_s:g} s in {self.cwd}",
                           command=argv, stderr_tail=_tail(err)) from None
        except OSError as exc:
            raise GitError(f"cannot run {_shown(argv)} in {self.cwd}: {exc.strerror or exc}",
                           command=argv) from None

    def run(self, *args: str, check: bool = True, env: Mapping[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``git ARGS`` (no shell). With ``check``, a non-zero exit raises GitError."""
        prefix: list[str] = []
        merged = dict(env or {})
        if self._needs_identity():
            name, email = IDENTITY
            prefix = ["-c", f"user.name={name}", "-c", f"user.email={email}"]
            for who in ("AUTHOR", "COMMITTER"):
                merged.setdefault(f"GIT_{who}_NAME", name)
                merged.setdefault(f"GIT_{who}_EMAIL", email)
        proc = self._exec([*prefix, *args], merged, input)
        if check and proc.returncode != 0:
            argv = ["git", *args]
            raise GitError(f"{_shown(argv)} failed with exit status {proc.returncode} "
                           f"in {self.cwd}", command=argv, returncode=proc.returncode,
                           stderr_tail=_tail(proc.stderr))
        return proc

    def out(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        """Stdout of ``git ARGS``, stripped; a failure raises GitError."""
        return self.run(*args, env=env).stdout.strip()

    def ok(self, *args: str) -> bool:
        """Whether ``git ARGS`` exits 0 (for questions asked by exit status)."""
        return self.run(*args, check=False).returncode == 0


def _shown(argv: Sequence[str], most: int = 160) -> str:
    text = " ".join(argv)
    return f"`{text}`" if len(text) <= most else f"`{text[:most - 1]}…`"


def repo_root(path: Path) -> Path:
    """The top of the work tree that holds ``path``."""
    path = Path(path)
    where = path if path.is_dir() else path.parent
    if not where.is_dir():
        raise GitError(f"{path} is not inside a git repository (no such directory)")
    proc = Git(where).run("rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise GitError(f"{path} is not inside a git repository",
                       command=["git", "rev-parse", "--show-toplevel"],
                       returncode=proc.returncode, stderr_tail=_tail(proc.stderr))
    return Path(proc.stdout.strip())


def common_dir(repo: Path) -> Path:
    """The repository's shared git directory (the main ``.git``, also from a linked
    worktree), absolute."""
    out = Git(repo).out("rev-parse", "--path-format=absolute", "--git-common-dir")
    return Path(out).resolve()


def head(repo: Path, rev: str = "HEAD") -> str:
    """The commit ``rev`` names in ``repo``, as a full hash."""
    proc = Git(repo).run("rev-parse", "--verify", "--quiet", "--end-of-options",
                         f"{rev}^{{commit}}", check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise GitError(f"{rev!r} names no commit in {repo}",
                       command=["git", "rev-parse", "--verify", rev],
                       returncode=proc.returncode)
    return proc.stdout.strip()


def branch_exists(repo: Path, name: str) -> bool:
    return Git(repo).ok("show-ref", "--verify", "--quiet", f"refs/heads/{name}")
