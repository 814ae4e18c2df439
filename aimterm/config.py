"""The cluster file: which instances the daemon runs, and where its state lives.

:func:`load_cluster_config` reads a YAML file (``configs/cluster.yaml`` is the documented
example) into a :class:`ClusterConfig`; every problem is a
:class:`~aimterm.errors.ConfigError` reading ``path:line: key: what was expected``. Without
a file the embedded default applies: three ``demo`` instances.

Relative paths (``state_dir``, ``socket``, an instance's ``cwd``) are relative to the folder
of the file; ``~`` is expanded. The control socket defaults to ``<state_dir>/control.sock``,
so every state dir is its own cluster and several can run side by side.

This module stays light (no PTY stack): the CLI resolves the socket through it for every
command, ``status`` included.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aimterm.adapter.schema import MAX_INT, MAX_SECONDS
from aimterm.adapter.yamlfile import KeyPath, YamlFile, format_key, parse_yaml, read_yaml_file
from aimterm.errors import ConfigError
from aimterm.paths import state_home
from aimterm.router import RoutingStrategy
from aimterm.statedir import check_private_file, ensure_private_dir

__all__ = ["RESUME_MODES", "ClusterConfig", "InstanceGroup", "RestartConfig", "default_state_dir",
           "load_cluster_config", "resolve_config"]

SOCKET_NAME = "control.sock"
DB_NAME = "aimterm.db"
DB_SIDE_FILES = ("-wal", "-shm", "-journal")  # what SQLite opens next to the database
LOG_NAME = "daemon.log"
TRANSCRIPT_DIR = "logs"


#: Instances a cluster may run unless its file says otherwise, and the most it may say.
MAX_INSTANCES = 256
MAX_INSTANCES_CEILING = 10_000


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/aimterm/default`` (``~/.local/state/aimterm/default``)."""
    return state_home() / "default"


@dataclass(frozen=True)
class RestartConfig:
    """Restart policy of instances that exit unasked (see :class:`aimterm.pool.RestartPolicy`)."""

    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    fast_failure_s: float = 5.0
    max_fast_failures: int = 5


@dataclass(frozen=True)
class InstanceGroup:
    """``count`` instances of one adapter."""

    adapter: str
    count: int = 1
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    stagger_ms: int = 0
    resume: str = "after_crash"  # one of RESUME_MODES


#: When instances start with their adapter's ``resume`` arguments (continue the tool's
#: previous conversation): ``after_crash`` — when a daemon relaunches the fleet of one that
#: died; ``always`` — every start, the pool's restarts of a dead instance included;
#: ``never``.
RESUME_MODES = ("after_crash", "always", "never")


@dataclass(frozen=True)
class ClusterConfig:
    state_dir: Path = field(default_factory=default_state_dir)
    socket: Path | None = None  # None: <state_dir>/control.sock
    routing: str = RoutingStrategy.ROUND_ROBIN.value
    queue_size: int = 1000
    queue_timeout_s: float | None = None
    #: The ceiling on instances in the whole cluster: a file or a `scale` past it is refused.
    max_instances: int = MAX_INSTANCES
    log_max_mb: float = 50.0  # an instance's transcript rolls over past this size
    #: Session host processes the instances run in: None (``auto``) one per core, 0 none
    #: (every PTY on the daemon's own loop).
    hosts: int | None = None
    restart: RestartConfig = field(default_factory=RestartConfig)
    instances: tuple[InstanceGroup, ...] = (InstanceGroup("demo", count=3),)
    source: str | None = None  # the file it came from; None for the embedded default

    @property
    def socket_path(self) -> Path:
        return self.socket if self.socket is not None else self.state_dir / SOCKET_NAME

    @property
    def db_path(self) -> Path:
        return self.state_dir / DB_NAME

    @property
    def log_path(self) -> Path:
        return self.state_dir / LOG_NAME

    @property
    def transcript_dir(self) -> Path:
        """Where each instance's terminal transcript goes (``<id>.cast``, what ``aimterm
        logs`` reads)."""
        return self.state_dir / TRANSCRIPT_DIR

    def ensure_state_dir(self) -> Path:
        """Create the state dir and its ``logs/`` (0700, missing parents too), or check that
        existing ones are real dirs of ours nobody else may enter, and that the files the
        daemon opens are not links or someone else's. Raises
        :class:`~aimterm.errors.UnsafeRuntimeDir` before anything is written: a dir open to
        others is refused, never tightened (it may have been planted)."""
        ensure_private_dir(self.state_dir)
        for name in (LOG_NAME, DB_NAME, *(DB_NAME + s for s in DB_SIDE_FILES)):
            check_private_file(self.state_dir / name)
        ensure_private_dir(self.transcript_dir)
        return self.state_dir


# -- checking -------------------------------------------------------------------------------------

_TOP = ("state_dir", "socket", "routing", "queue_size", "queue_timeout_s", "max_instances",
        "log_max_mb", "hosts", "restart", "instances")
#: The most session hosts a cluster file may ask for (far past any machine's cores).
MAX_HOSTS = 256
_RESTART = ("backoff_s", "backoff_max_s", "fast_failure_s", "max_fast_failures")
_INSTANCE = ("adapter", "count", "cwd", "env", "tags", "stagger_ms", "resume")


def got(value: Any) -> str:
    """How a wrong value reads in an error: ``boolean true``, ``a list``, ``string 'x'``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    kind = {str: "string", int: "integer", float: "number"}.get(type(value),
                                                                type(value).__name__)
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


class Checker:
    """Typed reads of a YAML file's values, each mistake a ConfigError at its line (the
    cluster file's, and the job file's through a subclass)."""

    def __init__(self, doc: YamlFile) -> None:
        self.doc = doc

    def fail(self, key: KeyPath, message: str) -> ConfigError:
        return ConfigError(message, path=self.doc.path, line=self.doc.line(key),
                           key=format_key(key) or None)

    def mapping(self, value: Any, key: KeyPath, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {got(value)}")
        for name in value:
            if name not in allowed:
                raise self.fail(key + (name,), f"unknown key {name!r} "
                                               f"(expected one of: {', '.join(sorted(allowed))})")
        return value

    def string(self, value: Any, key: KeyPath) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a non-empty string, got {got(value)}")
        return value

    def integer(self, value: Any, key: KeyPath, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {got(value)}")
        if value < minimum:
            raise self.fail(key, f"expected an integer >= {minimum}, got {value}")
        if value > MAX_INT:
            raise self.fail(key, f"expected an integer <= {MAX_INT}, got {value}")
        return value

    def number(self, value: Any, key: KeyPath, *, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"expected a number, got {got(value)}")
        if value < 0 or (positive and value == 0):
            raise self.fail(key, f"expected a number {'>' if positive else '>='} 0, "
                                 f"got {value}")
        if value > MAX_SECONDS:
            raise self.fail(key, f"expected a number <= {MAX_SECONDS} (30 days in seconds), "
                                 f"got {value:g}")
        return float(value)

    def path(self, value: Any, key: KeyPath, base: Path) -> Path:
        text = self.string(value, key)
        if "\x00" in text:  # no file system takes one: refused here, not as a traceback later
            raise self.fail(key, "expected text without NUL characters")
        path = Path(os.path.expanduser(text))
        return path if path.is_absolute() else base / path


def _build(doc: YamlFile, base: Path) -> ClusterConfig:
    c = Checker(doc)
    data = doc.data if doc.data is not None else {}
    top = c.mapping(data, (), _TOP)
    kw: dict[str, Any] = {"source": doc.path}
    if "state_dir" in top:
        kw["state_dir"] = c.path(top["state_dir"], ("state_dir",), base)
    if "socket" in top:
        kw["socket"] = c.path(top["socket"], ("socket",), base)
    if "routing" in top:
        choices = [s.value for s in RoutingStrategy]
        if top["routing"] not in choices:
            raise c.fail(("routing",), f"expected one of: {', '.join(choices)}; "
                                       f"got {got(top['routing'])}")
        kw["routing"] = top["routing"]
    if "queue_size" in top:
        kw["queue_size"] = c.integer(top["queue_size"], ("queue_size",), 1)
    if "max_instances" in top:
        kw["max_instances"] = c.integer(top["max_instances"], ("max_instances",), 1)
        if kw["max_instances"] > MAX_INSTANCES_CEILING:
            raise c.fail(("max_instances",), f"expected an integer <= {MAX_INSTANCES_CEILING}, "
                                             f"got {kw['max_instances']}")
    if "queue_timeout_s" in top and top["queue_timeout_s"] is not None:
        kw["queue_timeout_s"] = c.number(top["queue_timeout_s"], ("queue_timeout_s",),
                                         positive=True)
    if "log_max_mb" in top:
        kw["log_max_mb"] = c.number(top["log_max_mb"], ("log_max_mb",), positive=True)
    if "hosts" in top:
        if top["hosts"] == "auto":
            kw["hosts"] = None
        elif isinstance(top["hosts"], int) and not isinstance(top["hosts"], bool) \
                and 0 <= top["hosts"] <= MAX_HOSTS:
            kw["hosts"] = top["hosts"]
        else:
            raise c.fail(("hosts",), f"expected 'auto' or an integer from 0 to {MAX_HOSTS}, "
                                     f"got {got(top['hosts'])}")
    if "restart" in top:
        raw = c.mapping(top["restart"], ("restart",), _RESTART)
        checks: dict[str, Callable[[Any, KeyPath], Any]] = {
            "backoff_s": lambda v, k: c.number(v, k),
            "backoff_max_s": lambda v, k: c.number(v, k),
            "fast_failure_s": lambda v, k: c.number(v, k),
            "max_fast_failures": lambda v, k: c.integer(v, k, 1),
        }
        kw["restart"] = RestartConfig(**{name: checks[name](value, ("restart", name))
                                         for name, value in raw.items()})
    if "instances" in top:
        items = top["instances"]
        if not isinstance(items, list) or not items:
            raise c.fail(("instances",), f"expected a non-empty list of instance groups, "
                                         f"got {got(items)}")
        groups = []
        seen: set[str] = set()
        for index, item in enumerate(items):
            groups.append(_group(c, item, ("instances", index), base))
            if groups[-1].adapter in seen:
                raise c.fail(("instances", index, "adapter"),
                             f"adapter {groups[-1].adapter!r} is listed twice (one group "
                             f"per adapter: raise its count instead)")
            seen.add(groups[-1].adapter)
        kw["instances"] = tuple(groups)
        total = sum(g.count for g in groups)
        most = kw.get("max_instances", MAX_INSTANCES)
        if total > most:
            raise c.fail(("instances",), f"{total} instances in all, more than max_instances "
                                         f"({most}); lower the counts or raise max_instances")
    return ClusterConfig(**kw)


def _group(c: Checker, item: Any, key: KeyPath, base: Path) -> InstanceGroup:
    raw = c.mapping(item, key, _INSTANCE)
    if "adapter" not in raw:
        raise c.fail(key, "missing key 'adapter' (the adapter to run)")
    kw: dict[str, Any] = {"adapter": c.string(raw["adapter"], key + ("adapter",))}
    if "count" in raw:
        kw["count"] = c.integer(raw["count"], key + ("count",), 0)
    if "cwd" in raw:
        kw["cwd"] = str(c.path(raw["cwd"], key + ("cwd",), base))
    if "stagger_ms" in raw:
        kw["stagger_ms"] = c.integer(raw["stagger_ms"], key + ("stagger_ms",), 0)
    if "resume" in raw:
        if raw["resume"] not in RESUME_MODES:
            raise c.fail(key + ("resume",), f"expected one of: {', '.join(RESUME_MODES)}; "
                                            f"got {got(raw['resume'])}")
        kw["resume"] = raw["resume"]
    if "env" in raw:
        env = raw["env"]
        if not isinstance(env, dict):
            raise c.fail(key + ("env",), f"expected a mapping of names to values, got {got(env)}")
        out = {}
        for name, value in env.items():
            if value is None or isinstance(value, (dict, list)):
                raise c.fail(key + ("env", name),
                             f"expected a string, a number, or true/false, got {got(value)}")
            out[name] = str(value).lower() if isinstance(value, bool) else str(value)
        kw["env"] = out
    if "tags" in raw:
        tags = raw["tags"]
        if not isinstance(tags, list):
            raise c.fail(key + ("tags",), f"expected a list of strings, got {got(tags)}")
        kw["tags"] = tuple(c.string(t, key + ("tags", i)) for i, t in enumerate(tags))
    return InstanceGroup(**kw)


# -- loading --------------------------------------------------------------------------------------

def load_cluster_config(path: str | os.PathLike[str] | None = None) -> ClusterConfig:
    """Read the cluster file at ``path``; ``None`` gives the embedded default."""
    if path is None:
        return ClusterConfig()
    shown = os.fspath(path)
    text = read_yaml_file(shown, "cluster file")  # bounded: never more than 1 MiB is read
    base = Path(path).expanduser().resolve().parent
    return _build(parse_yaml(text, shown), base)


def resolve_config(config: str | os.PathLike[str] | None = None,
                   state_dir: str | os.PathLike[str] | None = None) -> ClusterConfig:
    """The config the CLI options name: ``-c FILE`` and/or ``--state-dir DIR`` (which wins
    over the file's). Both the daemon and the clients find the socket through this."""
    cfg = load_cluster_config(config)
    if state_dir is not None:
        # The parents are resolved, not the dir itself: a state dir that is a link is refused.
        given = Path(os.path.abspath(os.path.expanduser(os.fspath(state_dir))))
        cfg = dataclasses.replace(cfg, state_dir=given.parent.resolve() / given.name)
    return cfg
