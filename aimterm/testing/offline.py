"""Throwaway HOMEs that make the real agent CLIs work offline, against a :class:`FakeModel`.

Each function writes the configuration one CLI reads from its HOME into ``home`` and returns
the environment to run it with (merge it over ``os.environ``): its model endpoint on the fake
server's URL, and update checks, telemetry, analytics and other traffic to any other address
turned off. ``PATH`` has the CLI cache of ``scripts/install-agent-clis`` in front (see
:mod:`aimterm.testing.clis`). Nothing here belongs in an adapter: it is what a user's own
setup would provide. The facts behind each switch (and the CLI versions they were seen on)
are in the project's notes on the agent CLIs; treat them as facts to re-check when a CLI
moves.

:func:`offline_env` picks the function by CLI name; :func:`git_workdir` makes the git
repository agents want to work in.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .clis import path_with_clis

__all__ = ["CLAUDE_FOREIGN_ENV", "CLIS", "aider_env", "claude_env", "codex_env", "gemini_env",
           "git_workdir", "offline_env"]

#: Variables of the caller's environment that change what Claude Code does (another config
#: folder, a key that brings up its own dialog, a nested-session marker): unset them.
CLAUDE_FOREIGN_ENV = ("ANTHROPIC_API_KEY", "ANTHROPIC_MODEL", "ANTHROPIC_BASE_URL",
                      "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CONFIG_DIR", "CLAUDECODE",
                      "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX")


def _xdg(home: Path) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_STATE_HOME": str(home / ".state"), "NO_UPDATE_NOTIFIER": "1",
            "DO_NOT_TRACK": "1"}


def aider_env(home: str | os.PathLike[str], url: str, *, model: str = "fake-model",
              auto_commits: bool = False) -> dict[str, str]:
    """aider on ``openai/<model>`` at ``<url>/v1``, with a git identity.

    aider downloads litellm's model price list unless
    ``~/.aider/caches/model_prices_and_context_window.json`` exists, is not ``{}`` and is
    younger than a day; with the model in it aider also knows its context size and prices."""
    home = Path(home)
    caches = home / ".aider" / "caches"
    caches.mkdir(parents=True, exist_ok=True)
    (caches / "model_prices_and_context_window.json").write_text(json.dumps({model: {
        "max_input_tokens": 128000, "max_tokens": 4096, "max_output_tokens": 4096,
        "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
        "litellm_provider": "openai", "mode": "chat"}}))
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Fleet Test\n\temail = fleet@example.invalid\n"
        "[init]\n\tdefaultBranch = main\n")
    (home / ".aider.conf.yml").write_text(
        f"model: openai/{model}\n"
        f"openai-api-base: {url}/v1\n"
        "openai-api-key: x\n"
        "check-update: false\n"
        "show-release-notes: false\n"
        "analytics-disable: true\n"
        f"auto-commits: {'true' if auto_commits else 'false'}\n")
    return {"HOME": str(home), "PATH": path_with_clis(), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "GIT_CONFIG_NOSYSTEM": "1", "XDG_CONFIG_HOME": str(home / ".config")}


def claude_env(home: str | os.PathLike[str], url: str, *,
               settings: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Claude Code on the fake server, with ``settings`` (if given) as
    ``~/.claude/settings.json`` — e.g. ``{"permissions": {"defaultMode": "manual"}}``.

    ``ANTHROPIC_AUTH_TOKEN``, not ``ANTHROPIC_API_KEY``: on a fresh HOME the key brings up a
    "use this API key?" dialog, and first-run setup calls the real service. The variables of
    :data:`CLAUDE_FOREIGN_ENV` must not be inherited (the fixture unsets them)."""
    home = Path(home)
    (home / ".claude").mkdir(parents=True, exist_ok=True)
    if settings is not None:
        (home / ".claude" / "settings.json").write_text(json.dumps(settings))
    # From about 150 columns, after an edit in a git repository, 2.1.330 opens a diff panel
    # beside the transcript, and every screen row then carries its text too.
    state = home / ".claude.json"
    if not state.exists():
        state.write_text(json.dumps({"diffSidebarOpen": False}))
    return {"HOME": str(home), "PATH": path_with_clis(),
            "ANTHROPIC_BASE_URL": url, "ANTHROPIC_AUTH_TOKEN": "fake-token",
            "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1", **_xdg(home)}


#: Codex's one-time "try the new model" offers, marked as seen for the model they start from.
_CODEX_MIGRATIONS = {"gpt-5.5": "gpt-6-sol"}


def codex_env(home: str | os.PathLike[str], url: str, *, model: str = "gpt-5.5",
              settings: str = "", rules: str | None = None) -> dict[str, str]:
    """The Codex CLI with a custom model provider on ``<url>/v1`` (responses API).

    ``settings``: more top-level ``config.toml`` lines (``approval_policy``, ``sandbox_mode``);
    ``rules``: the text of ``rules/default.rules`` (exec-policy rules). The background daemon
    is off: otherwise codex copies itself (~400 MB) into each HOME and leaves a detached
    ``codex app-server`` running after it quits. Keep ``home`` out of /tmp: codex refuses to
    create its helper binaries there."""
    home = Path(home)
    codex_home = home / ".codex"
    (codex_home / "rules").mkdir(parents=True, exist_ok=True)
    notice = (f'\n[notice.model_migrations]\n"{model}" = "{_CODEX_MIGRATIONS[model]}"\n'
              if model in _CODEX_MIGRATIONS else "")
    (codex_home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "fake"\n'
        f"{settings}"
        "check_for_update_on_startup = false\n"
        "\n[model_providers.fake]\n"
        'name = "fake"\n'
        f'base_url = "{url}/v1"\n'
        'env_key = "AIMTERM_FAKE_MODEL_KEY"\n'
        'wire_api = "responses"\n'
        "\n[analytics]\nenabled = false\n"
        "\n[feedback]\nenabled = false\n"
        "\n[features]\ndaemon_auto_start = false\nremote_plugin = false\nplugins = false\n"
        '\n[history]\npersistence = "none"\n' + notice)
    if rules is not None:
        (codex_home / "rules" / "default.rules").write_text(rules)
    return {"HOME": str(home), "CODEX_HOME": str(codex_home), "PATH": path_with_clis(),
            "AIMTERM_FAKE_MODEL_KEY": "fake-key", **_xdg(home)}


def gemini_env(home: str | os.PathLike[str], url: str, *, trust: Iterable[str | os.PathLike[str]] = (),
               select_auth: bool = True) -> dict[str, str]:
    """The Gemini CLI on the fake server (``GOOGLE_GEMINI_BASE_URL``, no ``/v1beta``).

    ``trust``: folders pre-trusted in ``~/.gemini/trustedFolders.json`` (none: the file is not
    written, and Gemini asks); ``select_auth``: API-key auth pre-selected (otherwise Gemini
    asks for the auth method, then shows the key box pre-filled from ``GEMINI_API_KEY``)."""
    home = Path(home)
    conf = home / ".gemini"
    conf.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
    }
    if select_auth:
        settings["security"] = {"auth": {"selectedType": "gemini-api-key"}}
    (conf / "settings.json").write_text(json.dumps(settings, indent=2))
    trusted = {str(folder): "TRUST_FOLDER" for folder in trust}
    if trusted:
        (conf / "trustedFolders.json").write_text(json.dumps(trusted))
    return {"HOME": str(home), "PATH": path_with_clis(), "GEMINI_API_KEY": "x",
            "GEMINI_TELEMETRY_ENABLED": "false", "NO_BROWSER": "true",
            "GOOGLE_GEMINI_BASE_URL": url}


#: The CLIs :func:`offline_env` knows, by name.
CLIS: dict[str, Callable[..., dict[str, str]]] = {
    "aider": aider_env, "claude": claude_env, "codex": codex_env, "gemini": gemini_env}


def offline_env(cli: str, home: str | os.PathLike[str], url: str, **options: Any) -> dict[str, str]:
    """The function of :data:`CLIS` for ``cli``, called with ``home``, ``url`` and ``options``."""
    try:
        make = CLIS[cli]
    except KeyError:
        raise ValueError(f"no offline setup for {cli!r}; known: {', '.join(sorted(CLIS))}") \
            from None
    return make(home, url, **options)


def git_workdir(path: str | os.PathLike[str], *, files: Mapping[str, str] | None = None,
                commit: bool = False, env: Mapping[str, str] | None = None) -> Path:
    """A git repository at ``path`` (agents want to work inside one), holding ``files``
    (name → text); with ``commit``, they are committed (``env``, e.g. an offline HOME with a
    git identity, is merged over ``os.environ`` for git)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (path / name).write_text(text)
    git_env = {**os.environ, **(env or {})}
    cmds = [["git", "init", "-q"]]
    if commit:
        cmds += [["git", "add", "-A"], ["git", "commit", "-qm", "init"]]
    for cmd in cmds:
        subprocess.run(cmd, cwd=path, env=git_env, check=True)
    return path
