"""How an adapter's tool is launched: its command line, environment and working directory.

Templates (``{instance}``, ``{adapter}``, ``{cwd}``, ``{worktree}``, ``{home}``, ``{python}``)
are filled in here, once, for the session that spawns the tool and for anyone who wants to
show what would be run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aimterm.adapter.spec import AdapterSpec


def expand_template(value: str, variables: Mapping[str, str]) -> str:
    for key, sub in variables.items():
        value = value.replace("{" + key + "}", sub)
    return value


@dataclass(frozen=True)
class Launch:
    """One instance's launch: the adapter, and what the caller adds to it."""

    spec: AdapterSpec
    instance: str
    cwd: str | None = None  # None: the adapter's cwd, else the current directory
    env: Mapping[str, str] | None = None  # added over the adapter's env
    args: Sequence[str] = ()
    #: What a resumed start passes instead of the adapter's ``resume`` (None: those).
    resume_args: Sequence[str] | None = None

    def variables(self) -> dict[str, str]:
        cwd = self.cwd or os.getcwd()
        return {"instance": self.instance, "adapter": self.spec.name, "cwd": cwd,
                "worktree": cwd, "home": os.path.expanduser("~"), "python": sys.executable}

    def argv(self, *, resume: bool = False) -> list[str]:
        """The command line; with ``resume``, plus the adapter's resume arguments."""
        variables = self.variables()
        argv = [expand_template(a, variables) for a in self.spec.command]
        if resume:
            argv += list(self.resume_args if self.resume_args is not None else self.spec.resume)
        return argv + list(self.args)

    def environ(self) -> dict[str, str]:
        """This process's environment, less the adapter's ``env_remove``, plus its ``env``
        and the caller's; TERM from the adapter; no COLUMNS/LINES (the PTY has a size)."""
        variables = self.variables()
        env = dict(os.environ)
        for key in self.spec.env_remove:
            env.pop(key, None)
        for key, value in self.spec.env:
            env[key] = expand_template(value, variables)
        env.update(self.env or {})
        env["TERM"] = self.spec.terminal.term
        env["AIMTERM_INSTANCE"] = self.instance
        env.pop("COLUMNS", None)
        env.pop("LINES", None)
        return env

    def workdir(self) -> str | None:
        """The working directory to spawn in (None: this process's)."""
        cwd = self.spec.cwd if self.spec.cwd and self.cwd is None else self.cwd
        if cwd is None:
            return None
        return os.path.expandvars(os.path.expanduser(expand_template(cwd, self.variables())))
