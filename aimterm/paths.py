"""Where aimterm looks for things: adapter search path, config, state and runtime dirs."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable with extra adapter folders (``os.pathsep``-separated); searched last,
#: so its adapters override the built-in and user ones.
ADAPTER_PATH_ENV = "AIMTERM_ADAPTER_PATH"


def config_home() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "aimterm"


def state_home() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state")
    return Path(base) / "aimterm"


def runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return Path(base) / "aimterm"
    return Path("/tmp") / f"aimterm-{os.getuid()}"


def builtin_adapter_dir() -> Path:
    """The built-in adapters: ``aimterm/builtin_adapters`` when installed, else ``adapters/``."""
    try:
        import aimterm.builtin_adapters as pkg  # installed (wheel or editable): package_dir map

        files = list(getattr(pkg, "__path__", []))
        if files:
            return Path(files[0])
    except ImportError:
        pass
    return Path(__file__).resolve().parent.parent / "adapters"


def user_adapter_dir() -> Path:
    return config_home() / "adapters"


def adapter_search_path() -> list[tuple[str, Path]]:
    """``(origin, folder)`` in search order; a later folder overrides an earlier one."""
    path: list[tuple[str, Path]] = [("builtin", builtin_adapter_dir()), ("user", user_adapter_dir())]
    for entry in os.environ.get(ADAPTER_PATH_ENV, "").split(os.pathsep):
        if entry.strip():
            path.append(("env", Path(entry).expanduser()))
    return path
