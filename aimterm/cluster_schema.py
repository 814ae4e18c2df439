"""The JSON Schemas of a cluster, as data: its file, and what ``cluster status --json`` prints.

``aimterm cluster schema`` prints :data:`CLUSTER_SCHEMA`, the cluster file that
:func:`aimterm.config.load_cluster_config` reads (the original plan's
``cluster_config.schema.json``); ``aimterm cluster schema --status`` prints
:data:`STATUS_SCHEMA`, the daemon's ``status`` reply as ``cluster status --json`` shows it,
whose ``$defs/instance`` is also one row of :meth:`aimterm.fleet.Fleet.status`.

The loader does not run a validator (jsonschema belongs to the adapter layer, and the CLI
resolves the socket through the loader on every command): it checks the same rules by hand,
each mistake one ``path:line: key: what was expected``. So the bounds, defaults and choices
here come from the constants the loader uses, and ``tests/test_cluster_schema.py`` holds the
two together: every cluster file in the repository and in the tests' sources gets the same
verdict from both, and so does random data. What no schema can state, only the loader checks:

- one group per adapter (``instances[].adapter`` listed twice);
- the counts of all groups together at most ``max_instances``;
- an integer written with a decimal point (``count: 3.0``): JSON Schema cannot tell it from
  ``3``, the loader refuses it.

An empty file is the defaults to the loader; as JSON it is ``null``, which the schema does
not describe. The status schema is held to a live daemon's reply by the same test file.

Only plain data lives here, so importing this module never imports ``jsonschema``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from aimterm.adapter.schema import MAX_INT, MAX_SECONDS
from aimterm.config import (
    MAX_HOSTS,
    MAX_INSTANCES,
    MAX_INSTANCES_CEILING,
    RESUME_MODES,
    ClusterConfig,
    InstanceGroup,
    RestartConfig,
)
from aimterm.router import RoutingStrategy
from aimterm.states import State

__all__ = ["CLUSTER_SCHEMA", "LIFECYCLES", "STATUS_SCHEMA", "schema_json"]

_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_REF = "#/$defs/"
#: What the pool intends for an instance (:class:`aimterm.instance.Lifecycle`, which lives
#: with the pool: importing it here would load the runtime to print a schema).
LIFECYCLES = ("active", "draining", "retired")


def _default(cls: type, name: str) -> Any:
    """The loader's default for a key: the dataclass field's, so the two cannot drift."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.default
    raise KeyError(name)


def _int(description: str, minimum: int, maximum: int = MAX_INT, **more: Any) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum,
            "description": description, **more}


def _number(description: str, *, positive: bool, **more: Any) -> dict[str, Any]:
    # The loader's Checker.number: >= 0 (or > 0), at most MAX_SECONDS, whatever the unit.
    bound = "exclusiveMinimum" if positive else "minimum"
    return {"type": "number", bound: 0, "maximum": MAX_SECONDS, "description": description,
            **more}


def _path(description: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "pattern": "^[^\u0000]*$",
            "description": description}


def _obj(description: str, properties: dict[str, Any], *,
         required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "description": description,
                           "properties": properties, "additionalProperties": False}
    if required:
        out["required"] = required
    return out


# -- the cluster file -----------------------------------------------------------------------------

_RESTART = _obj(
    "Restart policy of instances that exit without being asked to.",
    {
        "backoff_s": _number("Seconds to wait before restarting an instance that exited.",
                             positive=False, default=_default(RestartConfig, "backoff_s")),
        "backoff_max_s": _number("The wait doubles per fast failure, up to this (seconds).",
                                 positive=False,
                                 default=_default(RestartConfig, "backoff_max_s")),
        "fast_failure_s": _number("An exit this soon after the start (seconds) counts as a "
                                  "fast failure, and so does a start that never became ready.",
                                  positive=False,
                                  default=_default(RestartConfig, "fast_failure_s")),
        "max_fast_failures": _int("This many fast failures in a row make the instance FATAL "
                                  "(until `aimterm cluster restart ID`).", 1,
                                  default=_default(RestartConfig, "max_fast_failures")),
    },
)

_GROUP = _obj(
    "Instances of one adapter.",
    {
        "adapter": {"type": "string", "minLength": 1,
                    "description": "Adapter name (`aimterm adapter list`) or path to an "
                                   "adapter file. One group per adapter."},
        "count": _int("Instances to run (0: none yet, scale up later). All groups together "
                      "run at most max_instances (a rule only the loader checks).", 0,
                      MAX_INSTANCES_CEILING, default=_default(InstanceGroup, "count")),
        "cwd": _path("Working directory of the tool; relative to the cluster file's folder, "
                     "~ expanded (default: the daemon's)."),
        "env": {"type": "object",
                "description": "Extra environment of the tool.",
                "additionalProperties": {
                    "type": ["string", "number", "boolean"],
                    "description": "Value of the variable; numbers and true/false are "
                                   "written out as text."}},
        "tags": {"type": "array", "items": {"type": "string", "minLength": 1,
                                            "description": "A label."},
                 "description": "Labels: `aimterm send --tag T` only goes to instances that "
                                "have them."},
        "stagger_ms": _int("Pause between starting two instances of the group, in "
                           "milliseconds.", 0, default=_default(InstanceGroup, "stagger_ms")),
        "resume": {"type": "string", "enum": list(RESUME_MODES),
                   "default": _default(InstanceGroup, "resume"),
                   "description": "When an instance starts with its adapter's resume "
                                  "arguments (continues the tool's previous conversation): "
                                  "after_crash — when a daemon relaunches the fleet of one "
                                  "that died; always — every start, restarts included; "
                                  "never."},
    },
    required=["adapter"],
)

CLUSTER_SCHEMA: dict[str, Any] = {
    "$schema": _DRAFT,
    "$id": "https://aimterm.dev/schema/cluster_config.json",
    "title": "aimterm cluster file",
    "description": "What `aimterm cluster up -c FILE` runs (YAML or JSON); every key is "
                   "optional. Relative paths are relative to the file's folder.",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "state_dir": _path("Where the database, the daemon's log, the transcripts and (by "
                           "default) the socket live; created 0700. Default: "
                           "$XDG_STATE_HOME/aimterm/default (~/.local/state/aimterm/default)."),
        "socket": _path("The control socket (default: <state_dir>/control.sock; at most 107 "
                        "bytes, checked when the daemon binds it)."),
        "routing": {"type": "string", "enum": [s.value for s in RoutingStrategy],
                    "default": _default(ClusterConfig, "routing"),
                    "description": "Which idle instance gets a prompt: round_robin, "
                                   "least_busy, or sticky (by the prompt's key)."},
        "queue_size": _int("Prompts that may wait for a free instance; more fail with "
                           "queue_full.", 1, default=_default(ClusterConfig, "queue_size")),
        "queue_timeout_s": {**_number("How long a prompt may wait for a free instance before "
                                      "queue_timeout, in seconds; null: for ever.",
                                      positive=True),
                            "type": ["number", "null"], "default": None},
        "max_instances": _int("Instances in the whole cluster; a file, a scale or a new group "
                              "past it is refused with limit_exceeded.", 1,
                              MAX_INSTANCES_CEILING, default=MAX_INSTANCES),
        "log_max_mb": _number("An instance's transcript rolls over past this size, in MB "
                              "(three older files are kept).", positive=True,
                              default=_default(ClusterConfig, "log_max_mb")),
        "hosts": {"oneOf": [{"const": "auto"},
                            {"type": "integer", "minimum": 0, "maximum": MAX_HOSTS}],
                  "default": "auto",
                  "description": "Session host processes the instances run in, so their "
                                 "terminals are read on every core: auto (one per core), a "
                                 "number, or 0 (every terminal on the daemon's own loop)."},
        "restart": {"$ref": _REF + "restart",
                    "description": "Restart policy of instances that exit unasked."},
        "instances": {"type": "array", "items": {"$ref": _REF + "group"}, "minItems": 1,
                      "default": [{"adapter": g.adapter, "count": g.count}
                                  for g in _default(ClusterConfig, "instances")],
                      "description": "The groups of instances, one per adapter."},
    },
    "$defs": {"restart": _RESTART, "group": _GROUP},
}


# -- what `cluster status --json` prints ----------------------------------------------------------

def _nullable(kind: str, description: str, **more: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], "description": description, **more}


_COUNT = {"type": "integer", "minimum": 0}

#: One instance, in the order of :data:`aimterm.fleet.STATUS_FIELDS` (the test holds them
#: together: a field added there without a description here fails it).
_INSTANCE = _obj(
    "One instance of the fleet (also a row of Fleet.status() in Python).",
    {
        "id": {"type": "string", "minLength": 1,
               "description": "Instance id: the adapter's name and a number (demo-1)."},
        "adapter": {"type": "string", "minLength": 1, "description": "Its adapter."},
        "group": {"type": "string", "minLength": 1,
                  "description": "Its group: the adapter's name for a group of the cluster "
                                 "file, a name of its own for one added later (a plan "
                                 "step's)."},
        "env_digest": {"type": "string", "pattern": "^[0-9a-f]{16}$",
                       "description": "A fingerprint of the variables its group sets (not "
                                      "their values): a job that sets variables runs on "
                                      "instances with its fingerprint."},
        "state": {"type": "string", "enum": [s.value for s in State],
                  "description": "What its process is doing now."},
        "pid": _nullable("integer", "Process id of the tool's latest process (after an "
                                    "exit, the one that exited: see state); null before "
                                    "its first start.", minimum=1),
        "turns": {**_COUNT, "description": "Turns it has finished."},
        "restarts": {**_COUNT, "description": "Times the pool has started it again."},
        "lifecycle": {"type": "string", "enum": list(LIFECYCLES),
                      "description": "What the pool intends: active (keep it running, route "
                                     "to it), draining (finish the turn, then stop), retired "
                                     "(stopped and removed)."},
        "tags": {"type": "array", "items": {"type": "string"},
                 "description": "Its group's labels, sorted."},
        "cwd": _nullable("string", "Working directory of the tool; null: the daemon's."),
        "fatal_reason": _nullable("string", "Why it is FATAL; null otherwise."),
        "question": _nullable("string", "The question it is WAITING on (no answer rule "
                                        "matched); null otherwise."),
        "resumed": {"type": "boolean",
                    "description": "Whether it started with its adapter's resume arguments "
                                   "(continuing its previous conversation)."},
        "turn_started_at": _nullable("number", "When it took the prompt it is working on "
                                               "(Unix time, seconds); null between turns."),
        "host": _nullable("integer", "The session host process its terminal is read in "
                                     "(0, 1, ...: see the cluster file's hosts); null: the "
                                     "daemon's own loop.", minimum=0),
    },
    required=["id", "adapter", "group", "env_digest", "state", "pid", "turns", "restarts",
              "lifecycle", "tags", "cwd", "fatal_reason", "question", "resumed",
              "turn_started_at", "host"],
)

_RECOVERED = _obj(
    "What the daemon found of a previous one when it started (empty for the moment before "
    "it has looked).",
    {
        "crashed": {"type": "boolean",
                    "description": "Whether the previous daemon of this state dir died "
                                   "without stopping."},
        "turns_failed": {**_COUNT, "description": "Turns in flight then, now marked failed."},
        "prompts_lost": {**_COUNT, "description": "Accepted prompts that never got an "
                                                  "outcome, now finished as lost."},
        "orphans_killed": {**_COUNT, "description": "Processes of the previous fleet killed."},
        "resumed": {"type": "array", "items": {"type": "string"},
                    "description": "Instances that start again in their conversation."},
        "not_resumed": {"type": "object",
                        "additionalProperties": {"type": "string",
                                                 "description": "Why it starts fresh."},
                        "description": "Instance -> why it starts fresh instead."},
    },
)

_DAEMON = _obj(
    "The daemon that answered.",
    {
        "pid": {"type": "integer", "minimum": 1, "description": "Its process id."},
        "uptime_s": {"type": "number", "minimum": 0,
                     "description": "Seconds since it bound its socket."},
        "version": {"type": "string", "description": "aimterm version it runs."},
        "state_dir": {"type": "string", "description": "Its state dir."},
        "socket": {"type": "string", "description": "Its control socket."},
        "config": _nullable("string", "The cluster file it read, as given; null: the "
                                      "embedded default."),
        "recovered": {"$ref": _REF + "recovered",
                      "description": "What it found of a previous daemon."},
    },
    required=["pid", "uptime_s", "version", "state_dir", "socket", "config", "recovered"],
)

STATUS_SCHEMA: dict[str, Any] = {
    "$schema": _DRAFT,
    "$id": "https://aimterm.dev/schema/cluster_status.json",
    "title": "aimterm cluster status",
    **_obj(
        "What `aimterm cluster status --json` prints: the daemon's status reply (the "
        "daemon, every instance, the queue).",
        {
            "daemon": {"$ref": _REF + "daemon", "description": "The daemon that answered."},
            "instances": {"type": "array", "items": {"$ref": _REF + "instance"},
                          "description": "Every instance, by adapter and number."},
            "queued": {**_COUNT, "description": "Prompts waiting for a free instance."},
            "ready": {"type": "boolean",
                      "description": "Whether the daemon has started and no instance is "
                                     "starting or waiting to restart."},
            "seq": {**_COUNT, "description": "The seq of the newest event recorded before "
                                             "this status was taken: follow the events "
                                             "stream from it to miss nothing after."},
        },
        required=["daemon", "instances", "queued", "ready", "seq"],
    ),
    "$defs": {"daemon": _DAEMON, "recovered": _RECOVERED, "instance": _INSTANCE},
}


def schema_json(*, status: bool = False) -> str:
    """The cluster file's schema (or, with ``status``, the status schema) as JSON text, for
    editors and ``aimterm cluster schema``."""
    return json.dumps(STATUS_SCHEMA if status else CLUSTER_SCHEMA, indent=2,
                      ensure_ascii=False)
