"""The JSON Schema of a job file, as data (``aimterm jobs schema`` prints it).

A file holds one job, a list of jobs, or ``{jobs: [...]}``. Each job is written in aimterm's
form (``id``, ``tool``, ``prompt`` ...) or in the job form of the plan this project grew from
(``job_id``, ``workstream_id``, ``command``, ``paths``, ``metadata``), so the plan's job files
load unchanged. The loader (:mod:`aimterm.jobs.loader`) enforces the same rules with
line-accurate messages, and the rules no schema can say: unique ids, where the prompt of a
plan job comes from, relative paths.

How a plan job becomes a :class:`~aimterm.jobs.spec.Job`:

============================  =================================================================
plan                          Job
============================  =================================================================
``job_id``                    ``id``. The plan's pattern (``job-YYYY-MM-DD-NNN``) is not
                              enforced: its own example ``job-2025-11-21-codex-001`` breaks
                              it. aimterm's id rule applies.
``tool``                      ``tool``: an adapter name (``tests``, ``git`` ... need an
                              adapter by that name, like any tool).
``command``                   ``prompt``: the value of ``--message``/``-m``/``--prompt`` in
                              ``args``, or the text of the file ``--message-file`` names. The
                              rest of the argv is not used: the adapter says how to start
                              the tool, and the prompt is sent as a plain message (never
                              aider's ``/ask``, which does not edit files).
``metadata.message_file``     ``prompt`` (the file's text), when ``command`` has none.
``workstream_id``             ``key``: the jobs of one workstream stay on one instance.
``env``                       ``env``.
``paths.working_dir``         ``cwd``.
``paths.error_report``        ``error_report`` (the result's ``error_report_path``).
``paths.repo_root``,          kept in ``metadata`` (``repo_root``, ``log_file``), as are
``paths.log_file``,           ``workstream_id``, ``run_id`` and the original ``command``.
``run_id``
``metadata.timeout_seconds``  ``timeout_s``; absent: the adapter's turn timeout.
``metadata.max_retries``      ``retries``; absent: 3, the plan's default. An explicit 0 stays
                              0 (the plan's engine let ``0`` fall through to a default).
``metadata.retry_policy``     ``none`` makes ``retries`` 0 (with ``max_retries`` above 0 it is
                              an error: which one was meant?). The others stay in
                              ``metadata`` for the orchestrator; escalation is not run yet.
``metadata.files_scope``      ``files``.
other ``metadata`` keys       ``metadata``.
``acceptance_tests``          ``acceptance`` (the plan's workstream steps carry these).
============================  =================================================================

Relative paths: ``paths.repo_root`` is relative to the job file's folder; the other
``paths`` to ``repo_root`` when given, else to the file's folder; ``files_scope`` and a
message file to the working dir. In aimterm's form, ``cwd`` and ``error_report`` are
relative to the file's folder and ``files`` to the job's ``cwd``.

Only plain data lives here, so importing this module never imports ``jsonschema``.
"""

from __future__ import annotations

import json
from typing import Any

from aimterm.adapter.schema import NAME_PATTERN
from aimterm.jobs.spec import (
    ID_PATTERN,
    MAX_ACCEPTANCE,
    MAX_ENV,
    MAX_FILES,
    MAX_ID_LENGTH,
    MAX_JOBS,
    MAX_RETRIES,
    MAX_SECONDS,
    MAX_TAGS,
)

__all__ = ["JOB_KEYS", "PLAN_JOB_KEYS", "PLAN_METADATA_KEYS", "PLAN_PATHS_KEYS", "PROMPT_FLAGS",
           "RETRY_POLICIES", "SCHEMA", "schema_json"]

#: The plan's retry policies (``metadata.retry_policy``).
RETRY_POLICIES = ("none", "retry_same", "escalate_to_codex", "escalate_to_claude")
#: The plan's default for ``metadata.max_retries``.
PLAN_DEFAULT_RETRIES = 3
#: Flags in a plan job's ``command.args`` whose value is the prompt; ``--message-file``
#: names a file holding it.
PROMPT_FLAGS = ("--message", "-m", "--prompt")
MESSAGE_FILE_FLAG = "--message-file"

_REF = "#/$defs/"


def _str(description: str, **more: Any) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "description": description, **more}


def _strings(description: str, most: int, item: str) -> dict[str, Any]:
    return {"type": "array", "items": _str(item), "maxItems": most, "description": description}


def _obj(description: str, properties: dict[str, Any], *, required: list[str] | None = None,
         closed: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "description": description,
                           "properties": properties}
    if closed:
        out["additionalProperties"] = False
    if required:
        out["required"] = required
    return out


_TIMEOUT = {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": MAX_SECONDS}
_RETRIES = {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES}

_DEFS: dict[str, Any] = {
    "id": {
        "title": "job id",
        "type": "string",
        "pattern": ID_PATTERN,
        "maxLength": MAX_ID_LENGTH,
        "description": "Job id, unique in the file: letters, digits, '.', '_' or '-', "
                       "starting with a letter or digit.",
    },
    "tool": {
        "title": "adapter name",
        "type": "string",
        "pattern": NAME_PATTERN,
        "description": "The adapter that runs the job (`aimterm adapter list`).",
    },
    "env": {
        "type": "object",
        "description": "Environment variables for the job.",
        "maxProperties": MAX_ENV,
        "propertyNames": {"minLength": 1, "pattern": "^[^=\u0000]+$"},
        "additionalProperties": {
            "type": ["string", "number", "boolean"],
            "description": "Value of the variable; numbers and true/false are written "
                           "out as text.",
        },
    },
    "job": _obj(
        "One job in aimterm's form.",
        {
            "id": {"$ref": _REF + "id", "description": "Job id, unique in the file."},
            "tool": {"$ref": _REF + "tool", "description": "The adapter that runs it."},
            "prompt": _str("What the tool is asked to do, sent as one message."),
            "files": _strings("Files the job works on; relative to cwd.", MAX_FILES,
                              "A file path."),
            "cwd": _str("The folder the job works in; relative to the job file's folder "
                        "(default: the instance's own)."),
            "env": {"$ref": _REF + "env", "description": "Environment variables."},
            "timeout_s": {**_TIMEOUT, "description": "Longest the tool's turn may take, in "
                                                     "seconds (default: the adapter's "
                                                     "turn_timeout_s)."},
            "retries": {**_RETRIES, "description": "Attempts after the first when the job "
                                                   "fails (default 0)."},
            "acceptance": _strings("Shell commands run in cwd after the turn; the job "
                                   "succeeded when every one exits 0.", MAX_ACCEPTANCE,
                                   "A shell command."),
            "key": {"type": ["string", "null"], "minLength": 1,
                    "description": "Jobs with the same key run on the same instance "
                                   "(sticky routing)."},
            "tags": _strings("Run only on instances that carry every one of these tags.",
                             MAX_TAGS, "A tag."),
            "metadata": {"type": "object",
                         "description": "Free data, carried through to the result."},
            "error_report": _str("Where to write a report when the job fails; relative to "
                                 "the job file's folder."),
        },
        required=["id", "tool", "prompt"],
    ),
    "plan_job": {
        **_obj(
            "One job in the plan's form (job.schema.json); mapped onto aimterm's form.",
            {
                "job_id": {"$ref": _REF + "id", "description": "Job id (-> id)."},
                "workstream_id": _str("Workstream of the job (-> key: a workstream stays on "
                                      "one instance)."),
                "run_id": _str("Run the job belongs to (kept in metadata)."),
                "tool": {"$ref": _REF + "tool", "description": "The adapter that runs it."},
                "command": _obj(
                    "The plan's one-shot command; only its prompt is used (the value of "
                    "--message, -m or --prompt, or the file --message-file names).",
                    {"exe": _str("The program (not used: the adapter starts the tool)."),
                     "args": {"type": "array", "items": {"type": "string"},
                              "description": "Its arguments."}},
                    required=["exe"],
                ),
                "env": {"$ref": _REF + "env", "description": "Environment variables."},
                "paths": _obj(
                    "Where the job works and writes.",
                    {"repo_root": _str("The repository (kept in metadata); relative to the "
                                       "job file's folder."),
                     "working_dir": _str("The folder the job works in (-> cwd); relative to "
                                         "repo_root."),
                     "log_file": _str("The job's log (kept in metadata)."),
                     "error_report": _str("Where a failure's report goes (-> "
                                          "error_report).")},
                ),
                "metadata": _obj(
                    "The plan's job metadata; keys not listed here are kept as they are.",
                    {"timeout_seconds": {"type": "number", "minimum": 1,
                                         "maximum": MAX_SECONDS,
                                         "description": "Longest the turn may take (-> "
                                                        "timeout_s)."},
                     "max_retries": {**_RETRIES, "description": "Attempts after the first "
                                                                "(-> retries; default 3)."},
                     "retry_policy": {"type": "string", "enum": list(RETRY_POLICIES),
                                      "description": "none: no retries; the others are "
                                                     "kept in metadata."},
                     "message_file": _str("A file holding the prompt; relative to the "
                                          "working dir."),
                     "files_scope": _strings("Files the job works on (-> files); relative "
                                             "to the working dir.", MAX_FILES,
                                             "A file path.")},
                    closed=False,
                ),
                "acceptance_tests": _strings("Shell commands that decide success (-> "
                                             "acceptance).", MAX_ACCEPTANCE,
                                             "A shell command."),
            },
            required=["job_id", "tool"],
        ),
        # The prompt comes from the command or from a message file.
        "anyOf": [{"required": ["command"]},
                  {"required": ["metadata"],
                   "properties": {"metadata": {"required": ["message_file"]}}}],
    },
    "entry": {"oneOf": [{"$ref": _REF + "job"}, {"$ref": _REF + "plan_job"}],
              "description": "A job in aimterm's form (id) or the plan's (job_id)."},
    "entries": {"type": "array", "items": {"$ref": _REF + "entry"}, "minItems": 1,
                "maxItems": MAX_JOBS, "description": "The jobs, in order."},
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://aimterm.dev/schema/jobs.json",
    "title": "aimterm jobs",
    "description": "An aimterm job file (YAML or JSON): one job, a list of jobs, or "
                   "{jobs: [...]}.",
    "oneOf": [
        {"$ref": _REF + "entry"},
        {"$ref": _REF + "entries"},
        _obj("The jobs under one key.",
             {"jobs": {"$ref": _REF + "entries", "description": "The jobs, in order."}},
             required=["jobs"]),
    ],
    "$defs": _DEFS,
}

#: Keys of each form, in the order the docs list them.
JOB_KEYS = tuple(_DEFS["job"]["properties"])
PLAN_JOB_KEYS = tuple(_DEFS["plan_job"]["properties"])
PLAN_PATHS_KEYS = tuple(_DEFS["plan_job"]["properties"]["paths"]["properties"])
PLAN_METADATA_KEYS = tuple(_DEFS["plan_job"]["properties"]["metadata"]["properties"])


def schema_json() -> str:
    """The schema as JSON text, for editors and ``aimterm jobs schema``."""
    return json.dumps(SCHEMA, indent=2, ensure_ascii=False)
