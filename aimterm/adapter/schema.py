"""The JSON Schema of one adapter file as written (before ``extends`` is resolved).

This module owns the structural contract of the YAML surface: which keys exist, their types,
enums and bounds, with a ``description`` on every property so editors can show help. Semantic
rules (regexes compile, ``when`` groups exist, an idle rule is present, ``command`` is given
after ``extends``) live in :mod:`aimterm.adapter.loader`.

Only plain data lives here, so importing this module never imports ``jsonschema``.
"""

from __future__ import annotations

import json
from typing import Any

from aimterm.records import RECORDERS

#: Pattern an adapter name must match.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"

#: Shape of a region string; the loader checks the numbers (``rows:A-B`` with 1 <= A <= B).
REGION_PATTERN = r"^(all|cursor|(top|bottom|cursor):[0-9]+|rows:[0-9]+-[0-9]+)$"

_REF = "#/$defs/"


def _ref(name: str, description: str) -> dict[str, Any]:
    return {"$ref": _REF + name, "description": description}


def _obj(description: str, properties: dict[str, Any],
         required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        out["required"] = required
    return out


#: The largest duration a file may give, in seconds (30 days): far past any sane timeout, and
#: well inside what timers and sleeps accept (1e300 would overflow them).
MAX_SECONDS = 30 * 24 * 3600
#: The largest integer a file may give where no smaller bound applies.
MAX_INT = 2**31 - 1


def _int(description: str, minimum: int, maximum: int = MAX_INT) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum,
            "description": description}


def _seconds(description: str, *, positive: bool) -> dict[str, Any]:
    bound = "exclusiveMinimum" if positive else "minimum"
    return {"type": "number", bound: 0, "maximum": MAX_SECONDS, "description": description}


def _str(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


_DEFS: dict[str, Any] = {
    "name": {
        "title": "adapter name",
        "type": "string",
        "pattern": NAME_PATTERN,
        "description": "Adapter name: lowercase letters, digits, '.', '_' or '-'.",
    },
    "command": {
        "title": "command",
        "type": ["string", "array"],
        "items": {"type": "string", "description": "One argument."},
        "minItems": 1,
        "description": "A command: a list of arguments, or one string split like a shell "
                       "would (no expansion).",
    },
    "pattern": {
        "title": "regular expression",
        "type": "string",
        "description": "A Python regular expression, matched with re.MULTILINE.",
    },
    "patterns": {
        "title": "regular expressions",
        "type": ["string", "array"],
        "items": {"$ref": _REF + "pattern", "description": "A Python regular expression."},
        "description": "One regular expression, or a list of them.",
    },
    "region": {
        "title": "region",
        "type": "string",
        "pattern": REGION_PATTERN,
        "description": "Where on the screen to look: all, top:N, bottom:N, rows:A-B "
                       "(1-based, inclusive), cursor (the cursor's line) or cursor:N "
                       "(N lines ending at the cursor's line).",
    },
    "keys": {
        "title": "key sequence",
        "type": ["string", "array"],
        "items": {"$ref": _REF + "key_item", "description": "One write to the terminal."},
        "description": "What to send: a string is typed as text; a list sends each item as a "
                       "separate write: a key name (enter, ctrl-c, up ...) or other text, "
                       "{key: name}, {text: s}, {paste: s} (bracketed paste) or "
                       "{wait_ms: n} (a pause).",
    },
    "key_item": {
        "title": "key item",
        "type": ["string", "object"],
        "properties": {
            "key": _str("A named key: enter, tab, escape, up, ctrl-c, f1 ..."),
            "text": _str("Literal text, typed as is."),
            "paste": _str("Text sent as one bracketed paste."),
            "wait_ms": _int("Pause this many milliseconds.", 0),
        },
        "additionalProperties": False,
        "minProperties": 1,
        "maxProperties": 1,
        "description": "A key name or text, or a mapping with exactly one of: key, text, "
                       "paste, wait_ms.",
    },
    "env_value": {
        "title": "environment value",
        "type": ["string", "number", "boolean"],
        "description": "Value of the variable; numbers are written out, true/false become "
                       "1/0.",
    },
}

_STATE_RULE = _obj(
    "A rule that says the tool is in a state when every given condition holds.",
    {
        "state": {"type": "string", "enum": ["idle", "busy", "waiting"],
                  "description": "The state this rule detects."},
        "name": _str("Name shown in reports (default: <state>#<index>)."),
        "priority": {"type": "integer",
                     "description": "Higher priority rules are tried first (default 0); ties "
                                    "keep file order."},
        "region": _ref("region", "Where on the screen the patterns must match (default all)."),
        "any": _ref("patterns", "At least one of these must match in the region (or title "
                                "must match)."),
        "all": _ref("patterns", "Every one of these must match in the region."),
        "not": _ref("patterns", "None of these may match in the region."),
        "title": _ref("pattern", "Alternative to any: the window title matches this."),
    },
    required=["state"],
)

_DIALOG = _obj(
    "A start-up dialog: when match is seen while starting, send send.",
    {
        "match": _ref("pattern", "What identifies the dialog on the screen."),
        "send": _ref("keys", "What to send to get past it."),
        "region": _ref("region", "Where to look for match (default all)."),
        "name": _str("Name shown in reports (default: dialog#<index>)."),
    },
    required=["match", "send"],
)

_ANSWER = _obj(
    "While busy, answer a question the tool asks.",
    {
        "match": _ref("pattern", "What identifies the question; may have named groups."),
        "send": _ref("keys", "The answer to send."),
        "when": {
            "type": "object",
            "description": "Only answer when each named group of match matches its pattern.",
            "additionalProperties": _ref("pattern",
                                         "Pattern the named group's text must match."),
        },
        "region": _ref("region", "Where to look for match (default all)."),
        "name": _str("Name shown in reports (default: answer#<index>)."),
    },
    required=["match", "send"],
)

_PROPERTIES: dict[str, Any] = {
    "name": _ref("name", "Adapter name (default: the file name without .yaml); never "
                         "inherited."),
    "description": _str("One line saying what tool this adapter drives."),
    "extends": _str("Name of the adapter this one builds on; its settings are the defaults "
                    "here. A file may extend the adapter it overrides (same name): it gets "
                    "the next definition down the search path."),
    "command": _ref("command", "The command to run."),
    "env": {
        "type": "object",
        "description": "Environment variables to set for the tool.",
        "additionalProperties": _ref("env_value", "Value of this variable."),
    },
    "env_remove": {
        "type": "array",
        "items": {"type": "string", "description": "A variable name."},
        "description": "Environment variables to remove before starting the tool.",
    },
    "cwd": _str("Working directory of the tool (default: the caller's)."),
    "terminal": _obj(
        "The pseudo-terminal the tool runs in.",
        {
            "rows": _int("Screen height in rows (default 40).", 2, 1000),
            "cols": _int("Screen width in columns (default 120).", 10, 1000),
            "term": _str("TERM value (default xterm-256color)."),
            "key_gap_ms": _int("Pause between separate writes of a key sequence (default "
                               "25).", 0),
            "scrollback": _int("Lines of scrollback kept as text (default 2000).", 0),
        },
    ),
    "detect": {"type": "string", "enum": ["screen", "stream"],
               "description": "Read state from the emulated screen, or from the printed "
                              "text stream (default screen)."},
    "settle_ms": _int("How long the screen must stay unchanged before a state counts "
                      "(default 300 for screen, 0 for stream).", 0),
    "turn_timeout_s": _seconds("Longest a turn may take, in seconds (default 600).",
                               positive=True),
    "answer_delay_ms": _int("Wait until a question has been on screen this long before "
                            "sending an answer, by rule or by the caller (default 0).", 0),
    "states": {
        "type": "array",
        "items": _STATE_RULE,
        "description": "Rules that tell idle, busy and waiting apart; at least one idle rule "
                       "is needed.",
    },
    "startup": _obj(
        "What happens between starting the tool and its first idle state.",
        {
            "timeout_s": _seconds("How long the tool may take to become idle (default 60).",
                                  positive=True),
            "dialogs": {"type": "array", "items": _DIALOG,
                        "description": "Dialogs to get past while starting."},
            "settle_ms": _int("How long the screen must stay unchanged before the first idle "
                              "(default: settle_ms). For tools that show their input before "
                              "they finish loading.", 0),
        },
    ),
    "submit": _obj(
        "How to hand the tool a prompt.",
        {
            "paste": {"type": "string", "enum": ["none", "bracketed"],
                      "description": "Type the prompt (none) or paste it (bracketed); "
                                     "default none."},
            "keys": _ref("keys", "Keys that submit the prompt (default [enter])."),
            "delay_ms": _int("Pause between the prompt text and the submit keys (default "
                             "0).", 0),
            "verify": {"type": "string", "enum": ["busy", "output", "none"],
                       "description": "How to confirm the tool took the prompt (default busy "
                                      "for screen, output for stream)."},
            "verify_timeout_ms": _int("How long to wait for that confirmation (default "
                                      "3000).", 1),
            "retry": _int("How many times to send the submit keys again (default 1).", 0),
            "clear": _ref("keys", "Keys sent before the prompt to empty the input line."),
            "after_echo": {"type": "boolean",
                           "description": "Send the submit keys as soon as the typed prompt "
                                          "shows in the input line; delay_ms is then the "
                                          "longest wait for it (default false)."},
        },
    ),
    "answers": {
        "type": "array",
        "items": _ANSWER,
        "description": "Questions answered automatically during a turn; an unanswered "
                       "question makes the session waiting.",
    },
    "reply": _obj(
        "How to cut the reply out of what the tool showed during a turn.",
        {
            "from": {"type": "string", "enum": ["screen-delta", "stream", "none"],
                     "description": "Where the reply comes from (default screen-delta for "
                                    "screen, stream for stream)."},
            "strip": {
                "type": "array",
                "items": {"type": "string", "enum": ["prompt", "echo", "chrome", "redraws"],
                          "description": "What to remove."},
                "description": "What to remove from the reply (default prompt, echo and "
                               "chrome).",
            },
            "chrome": _ref("patterns", "Lines matching any of these are removed as chrome."),
            "start": _ref("patterns", "The reply starts at the first line (after the echo) "
                                      "matching one of these, where the tool marks its answer "
                                      "(for an echo the screen cannot show as typed)."),
            "end": _ref("patterns", "The reply ends before the last line matching one of "
                                    "these (what the tool draws between its answer and its "
                                    "input area)."),
            "region": _ref("region", "Part of the screen the reply is taken from."),
            "trim": _ref("patterns", "Cut from the start of each reply line where they match "
                                     "(a bullet or indent the tool puts before its text)."),
            "record": {"type": "string", "enum": sorted(RECORDERS),
                       "description": "Take the reply, its tokens and its cost from the tool's "
                                      "own record of the conversation (its session or history "
                                      "file, this instance's own), read by this reader; the "
                                      "screen is the fallback."},
            "record_wait_ms": _int("How long after the screen settles the record may take "
                                   "to hold the turn's reply (default 2000).", 0, 60_000),
        },
    ),
    "metrics": {
        "type": "object",
        "description": "Named patterns whose named groups are read off the screen as "
                       "metrics.",
        "additionalProperties": _ref("pattern",
                                     "A pattern with named groups (?P<name>...)."),
    },
    "exit": _obj(
        "How to stop the tool politely before signals.",
        {
            "keys": _ref("keys", "Keys that make the tool quit."),
            "timeout_s": _seconds("How long to wait after the keys (default 5).",
                                  positive=False),
            "signal_grace_s": _seconds("Pause between SIGHUP, SIGTERM and SIGKILL (default "
                                       "1).", positive=False),
        },
    ),
    "interrupt": _obj(
        "How to interrupt a running turn.",
        {"keys": _ref("keys", "Keys that interrupt the tool (default [ctrl-c]).")},
    ),
    "resume": _ref("command", "Extra arguments that resume the previous conversation."),
    "jobs": _obj(
        "How a job (aimterm jobs) is handed to this tool: as turns on a running instance "
        "(pooled), or as one run of its non-interactive command (oneshot). Texts may use "
        "{prompt}, {files} (space-separated, relative to the job's cwd), {cwd} and {python}; "
        "the one-shot form also {message} (the prompt turn's text, files named); "
        "{{ and }} are literal braces.",
        {
            "pooled": {"type": "boolean",
                       "description": "Jobs may run as turns on pooled instances (default "
                                      "true)."},
            "files": {"type": ["string", "null"],
                      "description": "A turn sent once per job file before the prompt, with "
                                     "{file} the file (e.g. '/add {file}'); default none."},
            "prompt": _str("The prompt turn (default '{prompt}')."),
            "prompt_with_files": {"type": ["string", "null"],
                                  "description": "The prompt turn when the job names files "
                                                 "(default: prompt)."},
            "after": {"type": "array",
                      "items": _str("One turn."),
                      "description": "Turns sent after each job on its instance, whatever "
                                     "happened, to reset the tool for the next job (default "
                                     "none)."},
            "oneshot": {"type": ["string", "array", "null"],
                        "items": _str("One argument; exactly '{files...}' becomes one "
                                      "argument per job file."),
                        "minItems": 1,
                        "description": "The command of the tool's non-interactive form, run "
                                       "once per job under a terminal (a list, or a string "
                                       "split like a shell would); default none."},
            "oneshot_env": {
                "type": "object",
                "description": "Environment variables added for the one-shot command only.",
                "additionalProperties": _ref("env_value", "Value of this variable."),
            },
            "ignore": {"type": "array", "maxItems": 64,
                       "items": {"type": "string", "minLength": 1, "maxLength": 256},
                       "description": "Glob patterns of files the tool writes for itself "
                                      "(matched against each part of a path): never counted "
                                      "as changed by a job."},
            "pooled_args": {"type": ["string", "array"],
                            "items": {"type": "string", "maxLength": 4096}, "maxItems": 64,
                            "description": "Arguments added to the command of instances "
                                           "started to take jobs (not those of a cluster "
                                           "file): the mode in which the tool edits without "
                                           "asking (a list, or a string split like a shell "
                                           "would); default none."},
        },
    ),
    "verified": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 64},
                 "maxItems": 64,
                 "description": "Versions of the tool this adapter was checked against "
                                "(`aimterm adapter doctor` warns about another one)."},
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://aimterm.dev/schema/adapter.json",
    "title": "aimterm adapter",
    "description": "One aimterm adapter file: how to run, watch and drive one interactive "
                   "command-line tool. Nothing is required here because a file may take "
                   "settings from the adapter it extends.",
    "type": "object",
    "properties": _PROPERTIES,
    "additionalProperties": False,
    "$defs": _DEFS,
}


def schema_json() -> str:
    """The schema as JSON text, for editors and ``aimterm adapter schema``."""
    return json.dumps(SCHEMA, indent=2, ensure_ascii=False)
