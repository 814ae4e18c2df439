"""Where the live tests find the real agent CLIs that ``scripts/install-agent-clis`` installed.

The cache folder is ``$AIMTERM_CLI_HOME`` (default ``~/.cache/aimterm/clis``): npm packages in
``npm/``, aider in its own virtual environment in ``aider/``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_CLIS = ("claude", "codex", "gemini", "aider")


def cli_home() -> Path:
    env = os.environ.get("AIMTERM_CLI_HOME")
    return Path(env) if env else Path.home() / ".cache" / "aimterm" / "clis"


def find_cli(name: str) -> str | None:
    """The installed CLI's path (the cache first, then PATH), or None."""
    if name in _CLIS:
        path = cli_home() / "bin" / name
        if os.access(path, os.X_OK):
            return str(path)
    return shutil.which(name)


def path_with_clis(path: str | None = None) -> str:
    """``$PATH`` with the cache's ``bin`` folder in front, so adapters can say just ``claude``."""
    base = path if path is not None else os.environ.get("PATH", os.defpath)
    return os.pathsep.join([str(cli_home() / "bin"), base])
