"""The one error tree of aimterm.

Every error has a stable ``code`` (used on the wire) and an ``exit_code`` (used by the CLI),
and carries context. Foreign exceptions are translated into this tree at one boundary each.

::

    AimtermError
    ├── ConfigError                 bad adapter / cluster file (file:line: key: expected)
    │   └── AdapterNotFound         no adapter by that name on the search path
    ├── SpawnError                  command missing, not executable, or exec failed
    ├── SessionError                carries instance, adapter, state, screen tail
    │   ├── InvalidTransition       a state edge that the table does not allow
    │   ├── NotReady                send() while the session cannot take a turn
    │   ├── StartupTimeout          never reached IDLE within startup.timeout_s
    │   ├── TurnTimeout             a turn did not finish within its timeout
    │   ├── SubmitFailed            the tool never showed it took the prompt
    │   └── SessionExited           the tool exited while a turn or wait was in progress
    └── StopTimeout                 a process (group) survived every signal
"""

from __future__ import annotations

from collections.abc import Sequence


class AimtermError(Exception):
    """Base of every error aimterm raises on purpose."""

    code = "internal"
    exit_code = 1
    #: The prompt this error answers, when it is the outcome of a routed prompt.
    prompt: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message}


class ConfigError(AimtermError):
    """A configuration file is wrong. ``str()`` reads ``path:line: key: what was expected``."""

    code = "config_invalid"
    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        parts = []
        if path is not None:
            parts.append(f"{path}:{line}" if line is not None else path)
        if key:
            parts.append(key)
        parts.append(message)
        super().__init__(": ".join(parts))
        self.path = path
        self.line = line
        self.key = key
        self.reason = message


class AdapterNotFound(ConfigError):
    code = "adapter_not_found"
    exit_code = 3

    def __init__(self, name: str, searched: Sequence[str] = ()) -> None:
        where = ", ".join(searched) if searched else "the adapter search path"
        super().__init__(f"no adapter named {name!r} (searched {where})")
        self.name = name


class SpawnError(AimtermError):
    """The command could not be started; names the command and why."""

    code = "spawn_failed"
    exit_code = 4

    def __init__(self, argv: Sequence[str], reason: str) -> None:
        cmd = argv[0] if argv else "<empty command>"
        super().__init__(f"cannot start {cmd!r}: {reason}")
        self.argv = list(argv)
        self.reason = reason


class SessionError(AimtermError):
    """An error about one running instance, with the context needed to debug it."""

    code = "session_error"
    exit_code = 5

    def __init__(self, message: str, *, instance: str | None = None, adapter: str | None = None,
                 state: str | None = None, screen_tail: Sequence[str] = ()) -> None:
        self.detail = message
        self.instance = instance
        self.adapter = adapter
        self.state = state
        self.screen_tail = list(screen_tail)
        head = []
        if instance:
            head.append(f"instance {instance}")
        if adapter:
            head.append(f"adapter {adapter}")
        if state:
            head.append(f"state {state}")
        text = f"{message} ({', '.join(head)})" if head else message
        if self.screen_tail:
            shown = "\n".join("    | " + line for line in self.screen_tail)
            text += "\n  last screen lines:\n" + shown
        super().__init__(text)

    def to_dict(self) -> dict[str, object]:
        data = super().to_dict()
        data.update(instance=self.instance, adapter=self.adapter, state=self.state,
                    screen_tail=self.screen_tail)
        return data


class InvalidTransition(SessionError):
    code = "invalid_transition"


class NotReady(SessionError):
    code = "not_ready"
    exit_code = 6


class StartupTimeout(SessionError):
    code = "startup_timeout"
    exit_code = 7


class TurnTimeout(SessionError):
    code = "turn_timeout"
    exit_code = 7


class SubmitFailed(SessionError):
    code = "submit_failed"
    exit_code = 8


class SessionExited(SessionError):
    code = "session_exited"
    exit_code = 9


class StopTimeout(AimtermError):
    code = "stop_timeout"
    exit_code = 10


class ShuttingDown(AimtermError):
    """The pool is stopping and takes no more prompts; queued ones fail with this."""

    code = "shutting_down"
    exit_code = 15


class UnknownInstance(AimtermError):
    code = "unknown_instance"
    exit_code = 16

    def __init__(self, instance: str, known: list[str] | None = None) -> None:
        hint = f" (instances: {', '.join(known)})" if known else ""
        super().__init__(f"no instance named {instance!r}{hint}")
        self.instance = instance
