"""The one error tree of aimterm.

Every error has a stable ``code`` (used on the wire) and an ``exit_code`` (used by the CLI),
and carries context: the attributes named in its class's ``fields``, which :meth:`to_dict`
returns. Foreign exceptions are translated into this tree at one boundary each.
``tests/test_errors.py`` checks this tree, and the copy in ``docs/architecture.md``, against
the classes.

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
    ├── StopTimeout                 a process (group) survived every signal
    ├── NoSuchTool                  no instance, ready or not, matches the request
    ├── NobodyFree                  instances match, but none can take a turn now
    ├── QueueFull                   the dispatch queue holds its maximum of prompts
    ├── QueueTimeout                a queued prompt reached its deadline
    ├── LimitExceeded               a request past one of the fleet's ceilings
    ├── ShuttingDown                the pool is stopping and takes no more prompts
    ├── UnknownInstance             no instance by that id
    ├── ProtocolError               a message that is not valid protocol (bad_request)
    │   ├── UnknownOp               an op the server does not expose
    │   └── UnsupportedVersion      the peer speaks another protocol version
    ├── PermissionDenied            the socket's peer runs as another user
    ├── UnsafeRuntimeDir            a private dir or file is a link, or not only yours
    ├── AlreadyRunning              a live server already listens on the socket
    ├── DaemonNotRunning            no server listens on the socket
    ├── ConnectionLost              the server went away while a request was open
    ├── IpcTimeout                  no reply within the client's timeout
    ├── Cancelled                   the request was cancelled by its caller
    ├── StoreError                  the state database cannot be used
    ├── GitError                    a git command failed, or a repository is not as a plan needs
    ├── PlanError                   a plan run cannot start or go on
    └── RemoteError                 an error from the server with a code this side does not know
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

_MISSING = object()


def _shown(value: object, most: int = 80) -> str:
    """``repr(value)`` cut to ``most`` characters: a message that names what a peer sent
    stays short however much it sent."""
    text = repr(value)
    return text if len(text) <= most else text[:most - 1] + "…"


class AimtermError(Exception):
    """Base of every error aimterm raises on purpose."""

    # Class-level defaults rather than ClassVars: a RemoteError carries the server's code and
    # exit code on the instance.
    code: str = "internal"
    exit_code: int = 1
    #: The context attributes :meth:`to_dict` returns after ``code`` and ``message``, in order.
    #: A subclass lists its parent's fields first and then its own.
    fields: ClassVar[tuple[str, ...]] = ()
    #: The prompt this error answers, when it is the outcome of a routed prompt.
    prompt: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"code": self.code, "message": self.message}
        for name in self.fields:
            # An error rebuilt from the wire has only the context the peer sent.
            value = getattr(self, name, _MISSING)
            if value is not _MISSING:
                data[name] = value
        return data


class ConfigError(AimtermError):
    """A configuration file is wrong. ``str()`` reads ``path:line: key: what was expected``."""

    code = "config_invalid"
    exit_code = 2
    fields: ClassVar[tuple[str, ...]] = ("path", "line", "key", "reason")

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
    fields = (*ConfigError.fields, "name")

    def __init__(self, name: str, searched: Sequence[str] = ()) -> None:
        where = ", ".join(searched) if searched else "the adapter search path"
        super().__init__(f"no adapter named {name!r} (searched {where})")
        self.name = name


class SpawnError(AimtermError):
    """The command could not be started; names the command and why."""

    code = "spawn_failed"
    exit_code = 4
    fields = ("argv", "reason")

    def __init__(self, argv: Sequence[str], reason: str) -> None:
        cmd = argv[0] if argv else "<empty command>"
        super().__init__(f"cannot start {cmd!r}: {reason}")
        self.argv = list(argv)
        self.reason = reason


class SessionError(AimtermError):
    """An error about one running instance, with the context needed to debug it."""

    code = "session_error"
    exit_code = 5
    fields = ("instance", "adapter", "state", "screen_tail", "detail")

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


# --- Routing (raised by aimterm.router and the pool) -----------------------------------------


def _describe(tool: str | None, tags: Iterable[str]) -> str:
    what = f"tool {tool!r}" if tool else "any tool"
    tag_list = sorted(tags)
    if tag_list:
        what += " with tags " + ", ".join(tag_list)
    return what


class NoSuchTool(AimtermError):
    """No instance, ready or not, matches the request: waiting would never help."""

    code = "no_such_tool"
    exit_code = 11
    fields = ("tool", "tags", "available")

    def __init__(self, tool: str | None, tags: Iterable[str] = (), *,
                 available: Iterable[str] = ()) -> None:
        self.tool = tool
        self.tags = sorted(tags)
        self.available = sorted(set(available))
        running = ", ".join(self.available) if self.available else "none"
        super().__init__(f"no instance runs {_describe(tool, self.tags)} (running tools: {running})")


class NobodyFree(AimtermError):
    """Instances match the request, but none can take a turn right now."""

    code = "nobody_free"
    exit_code = 12
    fields = ("tool", "tags", "matching", "key", "holder")

    def __init__(self, tool: str | None, tags: Iterable[str] = (), *, matching: int = 0,
                 key: str | None = None, holder: str | None = None) -> None:
        self.tool = tool
        self.tags = sorted(tags)
        self.matching = matching
        self.key = key
        self.holder = holder
        if holder is not None:
            # Sticky: the key is bound to one instance, so "free" means that one instance.
            text = f"instance {holder} holding key {key!r} is busy"
        else:
            noun = "instance" if matching == 1 else "instances"
            text = f"all {matching} {noun} of {_describe(tool, self.tags)} are busy"
        super().__init__(text + "; queue the prompt or retry later")


class QueueFull(AimtermError):
    """Back-pressure: the dispatch queue already holds its maximum of waiting prompts."""

    code = "queue_full"
    exit_code = 13
    fields = ("maxsize",)

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        super().__init__(f"dispatch queue is full ({maxsize} prompts waiting); retry later "
                         "or raise the queue limit")


class LimitExceeded(AimtermError):
    """A request past one of the fleet's ceilings (instances in the cluster, …): refused
    whole, before anything is started."""

    code = "limit_exceeded"
    exit_code = 17
    fields = ("limit", "requested", "maximum")

    def __init__(self, limit: str, requested: int, maximum: int, hint: str = "") -> None:
        self.limit = limit
        self.requested = requested
        self.maximum = maximum
        super().__init__(f"{limit}: {requested} requested, at most {maximum} allowed"
                         + (f" ({hint})" if hint else ""))


class QueueTimeout(AimtermError):
    """A queued prompt reached its deadline before any suitable instance became free."""

    code = "queue_timeout"
    exit_code = 14
    fields = ("waited_s", "tool", "tags", "key")

    def __init__(self, waited_s: float, *, tool: str | None = None, tags: Iterable[str] = (),
                 key: str | None = None) -> None:
        self.waited_s = waited_s
        self.tool = tool
        self.tags = sorted(tags)
        self.key = key
        text = f"prompt for {_describe(tool, self.tags)} waited {waited_s:.1f}s in the queue"
        if key is not None:
            text += f" (sticky key {key!r})"
        super().__init__(text + " and no instance became free")


# --- The pool ----------------------------------------------------------------------------------


class ShuttingDown(AimtermError):
    """The pool is stopping and takes no more prompts; queued ones fail with this."""

    code = "shutting_down"
    exit_code = 15


class UnknownInstance(AimtermError):
    code = "unknown_instance"
    exit_code = 16
    fields = ("instance",)

    def __init__(self, instance: str, known: list[str] | None = None) -> None:
        hint = f" (instances: {', '.join(known)})" if known else ""
        super().__init__(f"no instance named {instance!r}{hint}")
        self.instance = instance


# --- The control socket and the store (layer L4) -------------------------------------------


class ProtocolError(AimtermError):
    """A message on the control socket is not valid protocol (bad JSON, missing fields)."""

    code = "bad_request"
    exit_code = 20


class UnknownOp(ProtocolError):
    code = "unknown_op"
    exit_code = 21
    fields = ("op",)

    def __init__(self, op: str, known: Sequence[str] = ()) -> None:
        hint = f" (ops: {', '.join(sorted(known))})" if known else ""
        super().__init__(f"unknown op {_shown(op)}{hint}")
        self.op = op


class UnsupportedVersion(ProtocolError):
    code = "unsupported_version"
    exit_code = 22
    fields = ("got", "supported")

    def __init__(self, got: object, supported: Sequence[int] = (1,)) -> None:
        wanted = ", ".join(str(v) for v in supported)
        super().__init__(f"protocol version {_shown(got)} is not supported (supported: {wanted})")
        self.got = got
        self.supported = list(supported)


class PermissionDenied(AimtermError):
    """The control socket is private to its user; another uid may not use it."""

    code = "permission_denied"
    exit_code = 23


class UnsafeRuntimeDir(AimtermError):
    """A private dir (the state dir, the socket's folder, ``logs/``) or a file in one is a
    link, someone else's, or open to group/other: refused before anything is written."""

    code = "unsafe_runtime_dir"
    exit_code = 24
    fields = ("path", "mode", "reason")

    def __init__(self, path: str, mode: int, reason: str, fix: str | None = None) -> None:
        super().__init__(f"refusing to use {path}: {reason}; {fix}" if fix is not None else
                         f"refusing to use {path} (mode {mode:04o}): {reason}; "
                         "it must be owned by you with mode 0700")
        self.path = path
        self.mode = mode
        self.reason = reason


class AlreadyRunning(AimtermError):
    code = "already_running"
    exit_code = 25
    fields = ("path",)

    def __init__(self, path: str) -> None:
        super().__init__(f"a server is already listening on {path}")
        self.path = path


class DaemonNotRunning(AimtermError):
    code = "daemon_not_running"
    exit_code = 26
    fields = ("path", "reason", "hint")

    def __init__(self, path: str, reason: str = "no socket",
                 hint: str = "start it with `aimterm cluster up`") -> None:
        super().__init__(f"the aimterm daemon is not running ({reason} at {path}); {hint}")
        self.path = path
        self.reason = reason
        self.hint = hint


class ConnectionLost(AimtermError):
    """The server closed the connection (or it broke) while a request was waiting."""

    code = "connection_lost"
    exit_code = 27


class IpcTimeout(AimtermError):
    code = "ipc_timeout"
    exit_code = 28
    fields = ("op", "timeout")

    def __init__(self, op: str, timeout: float) -> None:
        super().__init__(f"no reply to {op!r} within {timeout:g}s")
        self.op = op
        self.timeout = timeout


class Cancelled(AimtermError):
    """The caller cancelled the request before it finished."""

    code = "cancelled"
    exit_code = 29


class StoreError(AimtermError):
    """The state database cannot be opened or used (newer schema, corrupt file, ...)."""

    code = "store_error"
    exit_code = 30


class GitError(AimtermError):
    """A git command failed (or a repository is not in the state a plan needs).

    ``command`` is the argv, ``returncode`` git's exit status (None: it did not run to its
    end), ``stderr_tail`` the last lines of what it wrote to stderr.
    """

    code = "git_error"
    exit_code = 33
    fields = ("command", "returncode", "stderr_tail")

    def __init__(self, message: str, *, command: Sequence[str] = (),
                 returncode: int | None = None, stderr_tail: str = "") -> None:
        # One line (a CLI error is one line); the whole tail stays in ``stderr_tail``.
        last = next((line.strip() for line in reversed(stderr_tail.splitlines())
                     if line.strip()), "")
        super().__init__(f"{message} (git said: {last})" if last else message)
        self.command = list(command)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class PlanError(AimtermError):
    """A plan run cannot start or go on (its repository, its record, a resume that does not
    fit)."""

    code = "plan_error"
    exit_code = 32


class RemoteError(AimtermError):
    """An error reply whose code has no class on this side. Keeps the server's ``code``,
    ``exit_code`` and extra fields; ``expected`` is false for a crash in the server."""

    code = "remote_error"
    exit_code = 1

    def __init__(self, code: str, message: str, *, exit_code: int = 1, expected: bool = True,
                 extra: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.exit_code = exit_code
        self.expected = expected
        self.extra = dict(extra or {})

    def to_dict(self) -> dict[str, object]:
        # The only override: its context is whatever the server sent, not declared fields.
        return {**self.extra, **super().to_dict()}
