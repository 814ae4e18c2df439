"""A fake model server that real agent CLIs can be pointed at.

:class:`FakeModel` runs a small HTTP server on ``127.0.0.1`` (never any other address) in a
daemon thread and speaks the four wire protocols the agent CLIs use, answering
deterministically so a test can assert on what appears on the agent's screen::

    with FakeModel(think_s=0.5, prompts=["say hi"]) as fm:
        env["ANTHROPIC_BASE_URL"] = fm.url              # Claude Code
        env["GOOGLE_GEMINI_BASE_URL"] = fm.url          # Gemini CLI
        # aider: --openai-api-base {fm.url}/v1 ; Codex: base_url = "{fm.url}/v1"
        ...
        assert fm.expected_reply("say hi") in screen_text

Endpoints (any path prefix is tolerated; the query string is ignored except ``alt=sse``):

* ``POST …/chat/completions`` → api ``openai-chat``, endpoint ``chat``
* ``POST …/responses`` → ``openai-responses``, ``chat``
* ``POST …/messages`` (``?beta=true`` too) → ``anthropic``, ``chat``
* ``POST …/messages/count_tokens`` → ``anthropic``, ``count_tokens`` (``{"input_tokens": N}``)
* ``POST …/models/{m}:generateContent`` and ``…:streamGenerateContent[?alt=sse]`` → ``gemini``,
  ``chat`` (or ``json`` for a request asking for JSON output, e.g. Gemini CLI's router call)
* ``POST …/models/{m}:countTokens`` → ``gemini``, ``count_tokens`` (``{"totalTokens": N}``)
* ``GET …/models`` and ``GET …/models/{m}`` → ``models`` (one body readable by all clients)
* ``GET /`` and ``HEAD /`` → ``root``, 200
* anything else → ``not_found``, 404 with a JSON error body; a model endpoint whose body is
  not a JSON object → ``bad_request``, 400

Every request is recorded in :attr:`FakeModel.requests` (a snapshot list of
:class:`RecordedRequest`), including the names of the tools the agent declared.

Event sequences (streaming)
---------------------------

OpenAI chat completions (``stream: true``), each ``data: <json>\\n\\n``::

    chat.completion.chunk delta {role: assistant, content: ""}
    chat.completion.chunk delta {content: <piece>}            (one per piece)
    chat.completion.chunk delta {} finish_reason "stop"       ("tool_calls" for a tool call)
    chat.completion.chunk choices [] usage {...}              (only with stream_options.include_usage)
    [DONE]

A tool call streams ``delta.tool_calls[0]`` = ``{index, id, type, function: {name, arguments: ""}}``
and then argument pieces ``{index, function: {arguments: <piece>}}``.

OpenAI responses API (``stream: true``), each ``event: <type>\\ndata: <json>\\n\\n`` with an
increasing ``sequence_number``::

    response.created  response.in_progress
    response.output_item.added        (item: message, status in_progress)
    response.content_part.added       (part: output_text "")
    response.output_text.delta        (item_id, output_index, content_index, delta) × pieces
    response.output_text.done         (text)
    response.content_part.done        (part with the full text)
    response.output_item.done         (item: message, status completed)
    response.completed                (response.output, response.usage)

A tool call replaces the middle with ``response.output_item.added`` (item ``function_call``
with ``call_id``, ``name``, ``arguments: ""``), ``response.function_call_arguments.delta`` ×
pieces, ``response.function_call_arguments.done``, ``response.output_item.done``; for a
freeform ``custom`` tool (Codex's ``apply_patch``) the item is a ``custom_tool_call`` with
``input`` and the events are ``response.custom_tool_call_input.delta``/``.done``.

Anthropic messages (``stream: true``), each ``event: <type>\\ndata: <json>\\n\\n``::

    message_start  content_block_start (text "")  ping
    content_block_delta (text_delta) × pieces
    content_block_stop  message_delta (stop_reason end_turn, usage.output_tokens)  message_stop

A tool call uses a ``tool_use`` content block and ``input_json_delta`` deltas, stop reason
``tool_use``.

Gemini ``streamGenerateContent?alt=sse``: ``data: {candidates: [{content: {role: model,
parts: [{text: <piece>}]}, index: 0}], usageMetadata, modelVersion, responseId}\\n\\n`` per piece,
the last one with ``finishReason: "STOP"``; without ``alt=sse`` the same chunks as one JSON array.
A tool call is one chunk with a ``functionCall`` part.

Prompt extraction
-----------------

The *user text* of a request is the text of the last user-role message that is not a tool
result message:

* OpenAI chat: the last ``messages[]`` item with role ``user``; ``content`` is a string or a
  list of parts whose ``text`` is taken. Tool results are messages with role ``tool``/``function``.
* Responses API: ``input`` as a string, or the last ``input[]`` item with role ``user``
  (``input_text`` parts). Tool results are ``*_call_output`` items.
* Anthropic: the last ``messages[]`` item with role ``user`` whose content (a string or a list
  of blocks) has text; ``text`` blocks are joined, ``tool_result`` blocks are ignored and a
  message holding one counts as a tool result, not as a prompt — unless text blocks follow the
  last result: those are a new prompt (a prompt typed after a refused tool call), and the
  result before them does not count as one for it.
* Gemini: the last ``contents[]`` item with role ``user`` with ``text`` parts (joined);
  ``functionResponse`` parts are tool results.

Whole elements of the wrapper tags agents add for themselves (``<system-reminder>``,
``<environment_context>``, ``<user_instructions>``, see :data:`STRIPPED_TAGS`) are removed
and each text part is stripped of whitespace; non-empty parts are joined with newlines. A
user message left empty by that is skipped.

Agents may still wrap the user's words (``<user-prompt>…</user-prompt>``, ``Human: …``).
Pass ``prompts=[...]`` (the prompts the test will type): :meth:`FakeModel.find_prompt` then
returns the longest known prompt occurring in the user text (whitespace-insensitive), and the
reply is derived from that prompt, so wrapping does not change the reply. Subclasses may
override :meth:`FakeModel.find_prompt`.

The conversation *has a tool result* when a tool result comes after the message the user
text came from; a scripted :class:`ToolCall` fires only when it has none.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import posixpath
import re
import socket
import sys
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "API_ANTHROPIC",
    "API_GEMINI",
    "API_OPENAI_CHAT",
    "API_OPENAI_RESPONSES",
    "EDIT_TOOL_NAMES",
    "PARAM_NAMES",
    "SHELL_TOOL_NAMES",
    "STRIPPED_TAGS",
    "DeclaredTool",
    "FakeModel",
    "RecordedRequest",
    "ToolCall",
    "default_reply",
    "iter_sse",
]

HOST = "127.0.0.1"

API_OPENAI_CHAT = "openai-chat"
API_OPENAI_RESPONSES = "openai-responses"
API_ANTHROPIC = "anthropic"
API_GEMINI = "gemini"

#: Wrapper elements agents put around their own context; removed before a prompt is taken.
STRIPPED_TAGS: tuple[str, ...] = ("system-reminder", "environment_context", "user_instructions")

#: Tool names tried, in order, for a scripted call. Exact (case-insensitive) matches win;
#: then a declared name containing a candidate. Extend these tuples to support a new CLI.
EDIT_TOOL_NAMES: tuple[str, ...] = (
    "write_file",  # Gemini CLI
    "write",  # Claude Code
    "create_file",
    "apply_patch",  # Codex
    "edit_file",
    "edit",  # Claude Code
    "str_replace_based_edit_tool",
    "str_replace_editor",
    "str_replace",
    "replace",  # Gemini CLI
)
SHELL_TOOL_NAMES: tuple[str, ...] = (
    "run_shell_command",  # Gemini CLI
    "bash",  # Claude Code
    "shell",  # Codex
    "shell_command",  # Codex
    "exec_command",  # Codex (unified exec)
    "run_command",
    "exec",
    "terminal",
)
#: Declared names never chosen by the substring pass (they only look like edit/shell tools).
_SUBSTRING_EXCLUDE: tuple[str, ...] = ("todo", "notebook", "kill", "output", "read")

#: Parameter names filled for a scripted call, by role, first declared one wins.
PARAM_NAMES: dict[str, tuple[str, ...]] = {
    "path": ("file_path", "path", "absolute_path", "filename", "file", "target_file"),
    "content": ("content", "contents", "file_text", "text", "new_string", "new_str", "code"),
    "old": ("old_string", "old_str"),
    "command": ("command", "cmd", "commands", "script"),
    "description": ("description", "explanation"),
}
#: Path parameters whose tools want an absolute path (resolved against a sniffed cwd).
_ABSOLUTE_PATH_PARAMS = ("file_path", "absolute_path")

#: Values used for well-known fields when answering a JSON-mode ("router") request.
JSON_FIELD_DEFAULTS: dict[str, Any] = {
    "reasoning": "simple",
    "model_choice": "flash",
    "next_speaker": "user",
    "complexity_reasoning": "simple",
    "complexity_score": 1,
}
_DEFAULT_JSON_ANSWER: dict[str, Any] = {"reasoning": "simple", "model_choice": "flash"}

_CWD_PATTERNS = (
    re.compile(r"<cwd>([^<]+)</cwd>"),
    re.compile(r"[Ww]orking directory: (/[^\s\\\"<]+)"),
    re.compile(r"working in the directory: (/[^\s\\\"<]+)"),
)
_GEMINI_PATH = re.compile(r"/models/([^/:]+):(generateContent|streamGenerateContent|countTokens)$")
_DISCONNECT = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


def default_reply(prompt: str) -> str:
    """The default answer: ``FAKE-REPLY <sha1(prompt)[:8]>: <prompt[:60]>``."""
    digest = hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:8]
    return f"FAKE-REPLY {digest}: {prompt[:60]}"


@dataclass(frozen=True)
class ToolCall:
    """A scripted tool call: ``kind="edit"`` writes ``content`` to ``path``; ``kind="shell"``
    runs ``command``. Use an absolute ``path`` for tools that demand one (Claude Code's
    ``Write``, Gemini CLI's ``write_file``); a relative one is resolved against the working
    directory found in the request when the tool's parameter is ``file_path``/``absolute_path``."""

    kind: str
    path: str = ""
    content: str = ""
    command: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("edit", "shell"):
            raise ValueError(f"ToolCall.kind must be 'edit' or 'shell', not {self.kind!r}")


@dataclass(frozen=True)
class DeclaredTool:
    """A tool the agent declared in its request, normalised across the four APIs."""

    name: str
    type: str = "function"  # "function", or the API's own type ("custom", "local_shell", …)
    params: Mapping[str, Any] = field(default_factory=dict)  # JSON-schema properties
    required: tuple[str, ...] = ()


@dataclass
class RecordedRequest:
    """One request the server saw, and what it answered."""

    method: str
    path: str  # without the query string
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # the parsed JSON body, or None
    api: str | None  # "openai-chat" | "openai-responses" | "anthropic" | "gemini" | None
    endpoint: str  # "chat" | "json" | "count_tokens" | "models" | "root" | "not_found" | "bad_request"
    prompt: str | None = None  # what the reply was derived from (after find_prompt)
    user_text: str | None = None  # the extracted user text, before find_prompt
    streamed: bool = False
    tools: list[str] = field(default_factory=list)  # declared tool names, in order
    declared_tools: list[DeclaredTool] = field(default_factory=list)
    tool_result: bool = False  # a tool result follows the prompt message
    answer_kind: str = ""  # "text" | "tool_call" | "json" | "" (no model answer)
    answer: str = ""  # the text, the JSON text, or the tool call's arguments as JSON
    tool_name: str | None = None
    tool_args: Any = None
    status: int = 200
    mono: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> Any:
        """Alias of :attr:`body`."""
        return self.body


@dataclass
class _Turn:
    role: str
    texts: list[str]
    raw: str
    tool_result: bool = False


@dataclass
class _Conversation:
    user_text: str | None
    raw_text: str | None
    tool_result: bool


@dataclass
class _Answer:
    kind: str  # "text" | "tool_call" | "json"
    text: str = ""
    tool: DeclaredTool | None = None
    args: Any = None

    @property
    def arguments(self) -> str:
        if isinstance(self.args, str):
            return self.args
        return json.dumps(self.args)


# ---------------------------------------------------------------------------------------------
# Request parsing


def _text_of(content: Any) -> tuple[list[str], bool]:
    """Text parts and whether a tool result is among them, for any API's content shape."""
    if isinstance(content, str):
        return [content], False
    texts: list[str] = []
    tool_result = False
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                texts.append(part)
                continue
            if not isinstance(part, dict):
                continue
            ptype = part.get("type", "")
            if ptype in ("tool_result", "function_call_output") or "functionResponse" in part:
                tool_result = True
                texts = []  # only text after the last result can be the user's next words
                continue
            if part.get("thought") is True:
                continue
            text = part.get("text")
            if isinstance(text, str) and ptype in ("", "text", "input_text", "output_text"):
                texts.append(text)
    return texts, tool_result


def _turns(api: str, body: Any) -> list[_Turn]:
    if not isinstance(body, dict):
        return []
    turns: list[_Turn] = []
    if api == API_OPENAI_CHAT:
        for msg in body.get("messages") or []:
            if not isinstance(msg, dict):
                continue
            role = str(msg.get("role", ""))
            if role in ("tool", "function"):
                turns.append(_Turn(role, [], "", tool_result=True))
                continue
            texts, tres = _text_of(msg.get("content"))
            turns.append(_Turn(role, texts, "\n".join(texts), tres))
    elif api == API_OPENAI_RESPONSES:
        inp = body.get("input")
        if isinstance(inp, str):
            return [_Turn("user", [inp], inp)]
        for item in inp or []:
            if not isinstance(item, dict):
                continue
            itype = str(item.get("type", "message"))
            if itype.endswith("_call_output"):
                turns.append(_Turn("tool", [], "", tool_result=True))
            elif itype == "message" or "role" in item:
                texts, tres = _text_of(item.get("content"))
                turns.append(_Turn(str(item.get("role", "")), texts, "\n".join(texts), tres))
            else:
                turns.append(_Turn("assistant", [], ""))
    elif api == API_ANTHROPIC:
        for msg in body.get("messages") or []:
            if not isinstance(msg, dict):
                continue
            texts, tres = _text_of(msg.get("content"))
            turns.append(_Turn(str(msg.get("role", "")), texts, "\n".join(texts), tres))
    elif api == API_GEMINI:
        for item in body.get("contents") or []:
            if not isinstance(item, dict):
                continue
            texts, tres = _text_of(item.get("parts"))
            role = str(item.get("role") or "user")
            if role == "function":
                role, tres = "user", True
            turns.append(_Turn(role, texts, "\n".join(texts), tres))
    return turns


def _strip_wrappers(text: str) -> str:
    for tag in STRIPPED_TAGS:
        text = re.sub(rf"<{re.escape(tag)}>.*?</{re.escape(tag)}>", "", text, flags=re.DOTALL)
    return text.strip()


def _conversation(api: str, body: Any) -> _Conversation:
    turns = _turns(api, body)
    seen_tool_result = False
    for turn in reversed(turns):
        if turn.tool_result:
            text = "\n".join(t for t in (_strip_wrappers(x) for x in turn.texts) if t).strip()
            if turn.role == "user" and text:
                # Words after a tool result in the same message are a new prompt: Claude Code
                # sends a prompt typed after a refused tool call that way.
                return _Conversation(text, turn.raw, seen_tool_result)
            seen_tool_result = True
            continue
        if turn.role != "user":
            continue
        text = "\n".join(t for t in (_strip_wrappers(x) for x in turn.texts) if t).strip()
        if text:
            return _Conversation(text, turn.raw, seen_tool_result)
    return _Conversation(None, None, seen_tool_result)


def _props(schema: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    if not isinstance(schema, dict):
        return {}, ()
    props = schema.get("properties")
    req = schema.get("required")
    return (
        dict(props) if isinstance(props, dict) else {},
        tuple(str(r) for r in req) if isinstance(req, list) else (),
    )


def _declared_tools(api: str, body: Any) -> list[DeclaredTool]:
    if not isinstance(body, dict):
        return []
    found: list[DeclaredTool] = []

    def add(name: Any, ttype: str, schema: Any) -> None:
        if isinstance(name, str) and name:
            props, req = _props(schema)
            found.append(DeclaredTool(name, ttype, props, req))

    tools = body.get("tools") or []
    if not isinstance(tools, list):
        tools = []
    if api == API_OPENAI_CHAT:
        for tool in tools:
            if isinstance(tool, dict):
                inner = tool.get("function")
                spec: dict[str, Any] = inner if isinstance(inner, dict) else tool
                add(spec.get("name"), "function", spec.get("parameters"))
        for fn in body.get("functions") or []:
            if isinstance(fn, dict):
                add(fn.get("name"), "function", fn.get("parameters"))
    elif api == API_OPENAI_RESPONSES:
        for tool in tools:
            if isinstance(tool, dict):
                ttype = str(tool.get("type", "function"))
                add(tool.get("name") or ttype, ttype, tool.get("parameters"))
    elif api == API_ANTHROPIC:
        for tool in tools:
            if isinstance(tool, dict):
                ttype = "function" if "input_schema" in tool else str(tool.get("type", "function"))
                add(tool.get("name"), ttype, tool.get("input_schema"))
    elif api == API_GEMINI:
        for tool in tools:
            if not isinstance(tool, dict):
                continue
            decls = tool.get("functionDeclarations") or tool.get("function_declarations") or []
            for decl in decls:
                if isinstance(decl, dict):
                    schema = (
                        decl.get("parametersJsonSchema")
                        or decl.get("parameters_json_schema")
                        or decl.get("parameters")
                    )
                    add(decl.get("name"), "function", schema)
    return found


def _json_schema_request(api: str, body: Any) -> tuple[bool, Any]:
    """Whether the request asks for a JSON answer, and the schema if one was given."""
    if not isinstance(body, dict):
        return False, None
    if api == API_GEMINI:
        cfg = body.get("generationConfig") or body.get("generation_config") or {}
        if not isinstance(cfg, dict):
            return False, None
        schema = None
        for key in ("responseJsonSchema", "response_json_schema", "responseSchema", "response_schema"):
            if cfg.get(key) is not None:
                schema = cfg[key]
                break
        mime = cfg.get("responseMimeType") or cfg.get("response_mime_type")
        return (schema is not None or mime == "application/json"), schema
    if api == API_OPENAI_CHAT:
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
            js = fmt.get("json_schema")
            return True, js.get("schema") if isinstance(js, dict) else None
    if api == API_OPENAI_RESPONSES:
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
        if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
            return True, fmt.get("schema")
    return False, None


def _sample_json(schema: Any, key: str | None = None, depth: int = 0) -> Any:
    """A value satisfying ``schema`` (JSON schema or Gemini's upper-case dialect)."""
    if not isinstance(schema, dict) or depth > 8:
        return JSON_FIELD_DEFAULTS.get(key or "", "fake")
    enum = schema.get("enum")
    if key in JSON_FIELD_DEFAULTS and (not enum or JSON_FIELD_DEFAULTS[key] in enum):
        return JSON_FIELD_DEFAULTS[key]
    if enum:
        return enum[0]
    if "const" in schema:
        return schema["const"]
    for alt in ("anyOf", "oneOf", "allOf", "any_of"):
        options = schema.get(alt)
        if isinstance(options, list) and options:
            return _sample_json(options[0], key, depth + 1)
    stype = schema.get("type")
    if isinstance(stype, list):
        stype = next((t for t in stype if str(t).lower() != "null"), "null")
    stype = str(stype or ("object" if "properties" in schema else "")).lower()
    if stype == "object":
        props, _ = _props(schema)
        return {k: _sample_json(v, k, depth + 1) for k, v in props.items()}
    if stype == "array":
        count = int(schema.get("minItems") or schema.get("min_items") or 0)
        return [_sample_json(schema.get("items"), None, depth + 1) for _ in range(count)]
    if stype in ("integer", "number"):
        return 1
    if stype == "boolean":
        return False
    if stype == "null":
        return None
    return "fake"


def _choose_tool(kind: str, tools: Sequence[DeclaredTool]) -> DeclaredTool | None:
    names = EDIT_TOOL_NAMES if kind == "edit" else SHELL_TOOL_NAMES
    for cand in names:
        for tool in tools:
            if tool.name.lower() == cand:
                return tool
    for cand in names:
        for tool in tools:
            low = tool.name.lower()
            if cand in low and not any(x in low for x in _SUBSTRING_EXCLUDE):
                return tool
    return None


def _patch_for(path: str, content: str) -> str:
    lines = "".join(f"+{line}\n" for line in content.splitlines())
    return f"*** Begin Patch\n*** Add File: {path}\n{lines}*** End Patch\n"


def _sniff_cwd(body: Any) -> str | None:
    text = json.dumps(body)
    for pattern in _CWD_PATTERNS:
        m = pattern.search(text)
        if m:
            return m.group(1).rstrip(".,;")
    return None


def _tool_args(call: ToolCall, tool: DeclaredTool, body: Any) -> Any:
    """Arguments for ``tool`` carrying out ``call``: a dict, or a string for freeform tools."""
    props = tool.params

    def pick(role: str) -> str | None:
        return next((n for n in PARAM_NAMES[role] if n in props), None)

    if call.kind == "edit":
        if "apply_patch" in tool.name.lower():
            patch = _patch_for(call.path, call.content)
            if tool.type == "custom":
                return patch
            return {pick("content") or ("patch" if "patch" in props else "input"): patch}
        if not props:
            return {"file_path": call.path, "content": call.content}
        args: dict[str, Any] = {}
        path_param = pick("path")
        if path_param:
            path = call.path
            if path_param in _ABSOLUTE_PATH_PARAMS and not posixpath.isabs(path):
                cwd = _sniff_cwd(body)
                if cwd:
                    path = posixpath.join(cwd, path)
            args[path_param] = path
        old = pick("old")
        if old:
            args[old] = ""
        content_param = next((n for n in PARAM_NAMES["content"] if n in props and n != old), None)
        if content_param:
            args[content_param] = call.content
        cmd = props.get("command")
        if isinstance(cmd, dict) and "create" in (cmd.get("enum") or []):
            args["command"] = "create"
        return args
    if not props:
        return {"command": call.command}
    args = {}
    cmd_param = pick("command") or "command"
    schema = props.get(cmd_param)
    if isinstance(schema, dict) and str(schema.get("type", "")).lower() == "array":
        args[cmd_param] = ["bash", "-lc", call.command]
    else:
        args[cmd_param] = call.command
    desc = pick("description")
    if desc:
        args[desc] = f"Run {call.command}"
    return args


def _pieces(text: str, words: int) -> list[str]:
    """Split ``text`` into pieces of ``words`` words; joined they give ``text`` back."""
    if not text:
        return []
    tokens = re.findall(r"\s*\S+", text)
    tail = text[len("".join(tokens)) :]
    n = max(1, words)
    out = ["".join(tokens[i : i + n]) for i in range(0, len(tokens), n)] or [""]
    out[-1] += tail
    return out


def _split_n(text: str, parts: int = 3) -> list[str]:
    if not text:
        return [""]
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _count_tokens(obj: Any) -> int:
    return max(1, len(json.dumps(obj)) // 4) if obj is not None else 1


def _words(text: str) -> int:
    return max(1, len(text.split()))


# ---------------------------------------------------------------------------------------------
# Server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, model: FakeModel, port: int) -> None:
        self.model = model
        super().__init__((HOST, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._run_request, args=(request, client_address), daemon=True, name="fakemodel-conn"
        )
        self.model._track(thread, request, add=True)
        thread.start()

    def _run_request(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            self.model._track(threading.current_thread(), request, add=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, (*_DISCONNECT, OSError)):
            self.model.errors.append(f"{type(exc).__name__}: {exc}")
        if self.model.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeModel/1.0"
    sys_version = ""
    timeout = 120
    server: _Server

    # -- plumbing -------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.model.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    @property
    def model(self) -> FakeModel:
        return self.server.model

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = bytearray()
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data += self.rfile.read(size)
                self.rfile.readline(65537)
            raw = bytes(data)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length > 0 else b""
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding in ("gzip", "deflate") and raw:
            raw = zlib.decompress(raw, 47)  # auto-detect gzip/zlib headers
        return raw

    def _dispatch(self) -> None:
        try:
            self._handle()
        except _DISCONNECT:
            self.close_connection = True
        except OSError:
            self.close_connection = True

    def _handle(self) -> None:
        split = urllib.parse.urlsplit(self.path)
        path = split.path or "/"
        query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        headers = dict(self.headers.items())
        body: Any = None
        bad = False
        try:
            raw = self._read_body()
        except (ValueError, zlib.error):
            raw, bad = b"", True
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad = True
        rec = RecordedRequest(self.command, path, query, headers, body, None, "not_found")
        self._route(rec, split.query, bad)

    # -- routing --------------------------------------------------------------------------

    def _guess_api(self, path: str, query: Mapping[str, str]) -> str:
        if self.headers.get("anthropic-version") or self.headers.get("x-api-key"):
            return API_ANTHROPIC
        if "v1beta" in path or self.headers.get("x-goog-api-key") or "key" in query:
            return API_GEMINI
        return API_OPENAI_CHAT

    def _route(self, rec: RecordedRequest, raw_query: str, bad: bool) -> None:
        path = rec.path.rstrip("/") or "/"
        method = self.command
        gem = _GEMINI_PATH.search(path)
        if method in ("GET", "HEAD") and path == "/":
            rec.endpoint = "root"
            self.model._record(rec)
            self._send_json(200, {"ok": True, "server": "fakemodel"})
            return
        if method in ("GET", "HEAD") and (path.endswith("/models") or "/models/" in path):
            rec.api, rec.endpoint = self._guess_api(path, rec.query), "models"
            self.model._record(rec)
            name = path.rsplit("/models/", 1)[1] if "/models/" in path else None
            self._send_json(200, self.model._models_payload(name))
            return
        if method != "POST":
            self._not_found(rec)
            return
        if path.endswith("/messages/count_tokens"):
            rec.api, rec.endpoint = API_ANTHROPIC, "count_tokens"
            self.model._record(rec)
            self._send_json(200, {"input_tokens": _count_tokens(rec.body)})
            return
        if gem and gem.group(2) == "countTokens":
            rec.api, rec.endpoint = API_GEMINI, "count_tokens"
            self.model._record(rec)
            self._send_json(200, {"totalTokens": _count_tokens(rec.body)})
            return
        if path.endswith("/chat/completions"):
            api = API_OPENAI_CHAT
        elif path.endswith("/responses"):
            api = API_OPENAI_RESPONSES
        elif path.endswith("/messages"):
            api = API_ANTHROPIC
        elif gem:
            api = API_GEMINI
        else:
            self._not_found(rec)
            return
        rec.api = api
        if bad or not isinstance(rec.body, dict):
            rec.endpoint, rec.status = "bad_request", 400
            self.model._record(rec)
            self._send_json(400, _error_body(400, "request body is not a JSON object"))
            return
        body = rec.body
        if api == API_GEMINI and gem:
            model_name = gem.group(1)
            rec.streamed = gem.group(2) == "streamGenerateContent"
        else:
            model_name = str(body.get("model") or self.model.model)
            rec.streamed = body.get("stream") is True
        answer = self.model._answer_for(api, body, rec)
        self.model._record(rec)
        if not self.model._think():
            self.close_connection = True
            return
        if api == API_OPENAI_CHAT:
            self._openai_chat(rec, body, model_name, answer)
        elif api == API_OPENAI_RESPONSES:
            self._openai_responses(rec, body, model_name, answer)
        elif api == API_ANTHROPIC:
            self._anthropic(rec, body, model_name, answer)
        else:
            self._gemini(rec, body, model_name, answer, rec.query.get("alt") == "sse")

    def _not_found(self, rec: RecordedRequest) -> None:
        rec.endpoint, rec.status = "not_found", 404
        self.model._record(rec)
        self._send_json(404, _error_body(404, f"no fake endpoint for {self.command} {rec.path}"))

    # -- writing --------------------------------------------------------------------------

    def _send_json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def _start_stream(self, content_type: str = "text/event-stream") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: str) -> None:
        raw = data.encode("utf-8")
        if raw:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))
            self.wfile.flush()
            delay = self.model.chunk_delay_s
            if delay > 0:
                self.model._stopping.wait(delay)

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _sse(self, obj: Any, event: str | None = None) -> None:
        head = f"event: {event}\n" if event else ""
        self._chunk(f"{head}data: {json.dumps(obj)}\n\n")

    # -- OpenAI chat completions ----------------------------------------------------------

    def _openai_chat(self, rec: RecordedRequest, body: dict[str, Any], model: str, ans: _Answer) -> None:
        cid = self.model._new_id("chatcmpl-fake")
        created = int(time.time())
        text = ans.text
        usage = {
            "prompt_tokens": _count_tokens(body),
            "completion_tokens": _words(text if ans.kind != "tool_call" else ans.arguments),
            "total_tokens": 0,
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        call_id = self.model._new_id("call_fake") if ans.kind == "tool_call" else ""
        finish = "tool_calls" if ans.kind == "tool_call" else "stop"
        if not rec.streamed:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": text if ans.kind != "tool_call" else None,
            }
            if ans.kind == "tool_call" and ans.tool is not None:
                message["tool_calls"] = [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": ans.tool.name, "arguments": ans.arguments},
                    }
                ]
            self._send_json(
                200,
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                    "usage": usage,
                },
            )
            return
        opts = body.get("stream_options")
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            obj: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                obj["usage"] = None
            return obj

        self._start_stream()
        if ans.kind == "tool_call" and ans.tool is not None:
            self._sse(chunk({"role": "assistant", "content": None}))
            self._sse(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": ans.tool.name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for piece in _split_n(ans.arguments):
                self._sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        else:
            self._sse(chunk({"role": "assistant", "content": ""}))
            for piece in _pieces(text, self.model.stream_chunk_words):
                self._sse(chunk({"content": piece}))
        self._sse(chunk({}, finish))
        if include_usage:
            final = chunk({})
            final["choices"] = []
            final["usage"] = usage
            self._sse(final)
        self._chunk("data: [DONE]\n\n")
        self._end_stream()

    # -- OpenAI responses API -------------------------------------------------------------

    def _openai_responses(self, rec: RecordedRequest, body: dict[str, Any], model: str, ans: _Answer) -> None:
        rid = self.model._new_id("resp_fake")
        created = int(time.time())
        out_tokens = _words(ans.text if ans.kind != "tool_call" else ans.arguments)
        in_tokens = _count_tokens(body)
        usage = {
            "input_tokens": in_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": out_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": in_tokens + out_tokens,
        }
        custom = ans.kind == "tool_call" and ans.tool is not None and ans.tool.type == "custom"
        if ans.kind == "tool_call" and ans.tool is not None:
            item_id = self.model._new_id("ctc_fake" if custom else "fc_fake")
            call_id = self.model._new_id("call_fake")
            final_item: dict[str, Any] = {
                "id": item_id,
                "type": "custom_tool_call" if custom else "function_call",
                "status": "completed",
                "call_id": call_id,
                "name": ans.tool.name,
            }
            if custom:
                final_item["input"] = ans.arguments
            else:
                final_item["arguments"] = ans.arguments
        else:
            item_id = self.model._new_id("msg_fake")
            final_item = {
                "id": item_id,
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": ans.text, "annotations": []}],
            }

        def response(status: str, output: list[Any], use: Any) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "response",
                "created_at": created,
                "status": status,
                "error": None,
                "incomplete_details": None,
                "instructions": body.get("instructions"),
                "model": model,
                "output": output,
                "parallel_tool_calls": body.get("parallel_tool_calls", True),
                "previous_response_id": body.get("previous_response_id"),
                "store": body.get("store", False),
                "temperature": body.get("temperature", 1.0),
                "tool_choice": body.get("tool_choice", "auto"),
                "tools": body.get("tools", []),
                "top_p": body.get("top_p", 1.0),
                "usage": use,
                "metadata": {},
            }

        if not rec.streamed:
            self._send_json(200, response("completed", [final_item], usage))
            return
        seq = itertools.count()

        def emit(etype: str, **fields: Any) -> None:
            self._sse({"type": etype, "sequence_number": next(seq), **fields}, etype)

        self._start_stream()
        emit("response.created", response=response("in_progress", [], None))
        emit("response.in_progress", response=response("in_progress", [], None))
        if ans.kind == "tool_call":
            added = dict(final_item, status="in_progress")
            added["input" if custom else "arguments"] = ""
            emit("response.output_item.added", output_index=0, item=added)
            prefix = "response.custom_tool_call_input" if custom else "response.function_call_arguments"
            for piece in _split_n(ans.arguments):
                emit(f"{prefix}.delta", item_id=item_id, output_index=0, delta=piece)
            if custom:
                emit(f"{prefix}.done", item_id=item_id, output_index=0, input=ans.arguments)
            else:
                emit(
                    f"{prefix}.done",
                    item_id=item_id,
                    output_index=0,
                    name=final_item["name"],
                    arguments=ans.arguments,
                )
        else:
            emit(
                "response.output_item.added",
                output_index=0,
                item={
                    "id": item_id,
                    "type": "message",
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                },
            )
            where = {"item_id": item_id, "output_index": 0, "content_index": 0}
            emit(
                "response.content_part.added",
                **where,
                part={"type": "output_text", "text": "", "annotations": []},
            )
            for piece in _pieces(ans.text, self.model.stream_chunk_words):
                emit("response.output_text.delta", **where, delta=piece, logprobs=[])
            emit("response.output_text.done", **where, text=ans.text, logprobs=[])
            emit(
                "response.content_part.done",
                **where,
                part={"type": "output_text", "text": ans.text, "annotations": []},
            )
        emit("response.output_item.done", output_index=0, item=final_item)
        emit("response.completed", response=response("completed", [final_item], usage))
        self._end_stream()

    # -- Anthropic messages ---------------------------------------------------------------

    def _anthropic(self, rec: RecordedRequest, body: dict[str, Any], model: str, ans: _Answer) -> None:
        mid = self.model._new_id("msg_fake")
        in_tokens = _count_tokens(body)
        tool = ans.kind == "tool_call" and ans.tool is not None
        out_tokens = _words(ans.arguments if tool else ans.text)
        stop_reason = "tool_use" if tool else "end_turn"
        usage = {
            "input_tokens": in_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": out_tokens,
        }
        tool_id = self.model._new_id("toolu_fake") if tool else ""
        if tool and ans.tool is not None:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": tool_id,
                "name": ans.tool.name,
                "input": ans.args,
            }
        else:
            block = {"type": "text", "text": ans.text}
        if not rec.streamed:
            self._send_json(
                200,
                {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [block],
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": usage,
                },
            )
            return
        self._start_stream()
        self._sse(
            {
                "type": "message_start",
                "message": {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": dict(usage, output_tokens=1),
                },
            },
            "message_start",
        )
        start_block = dict(block, input={}) if tool else {"type": "text", "text": ""}
        self._sse(
            {"type": "content_block_start", "index": 0, "content_block": start_block}, "content_block_start"
        )
        self._sse({"type": "ping"}, "ping")
        if tool:
            for piece in _split_n(ans.arguments):
                delta = {"type": "input_json_delta", "partial_json": piece}
                self._sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
        else:
            for piece in _pieces(ans.text, self.model.stream_chunk_words):
                delta = {"type": "text_delta", "text": piece}
                self._sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
        self._sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        self._sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": out_tokens},
            },
            "message_delta",
        )
        self._sse({"type": "message_stop"}, "message_stop")
        self._end_stream()

    # -- Gemini ---------------------------------------------------------------------------

    def _gemini(
        self, rec: RecordedRequest, body: dict[str, Any], model: str, ans: _Answer, sse: bool
    ) -> None:
        rid = self.model._new_id("fake-response-")
        in_tokens = _count_tokens(body)
        tool = ans.kind == "tool_call" and ans.tool is not None
        out_tokens = _words(ans.arguments if tool else ans.text)
        usage = {
            "promptTokenCount": in_tokens,
            "candidatesTokenCount": out_tokens,
            "totalTokenCount": in_tokens + out_tokens,
        }

        def chunk(parts: list[dict[str, Any]], finish: bool) -> dict[str, Any]:
            cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
            if finish:
                cand["finishReason"] = "STOP"
            return {"candidates": [cand], "usageMetadata": usage, "modelVersion": model, "responseId": rid}

        if tool and ans.tool is not None:
            chunks = [chunk([{"functionCall": {"name": ans.tool.name, "args": ans.args}}], True)]
        elif ans.kind == "json" or not rec.streamed:
            chunks = [chunk([{"text": ans.text}], True)]
        else:
            pieces = _pieces(ans.text, self.model.stream_chunk_words) or [""]
            chunks = [chunk([{"text": p}], i == len(pieces) - 1) for i, p in enumerate(pieces)]
        if not rec.streamed:
            self._send_json(200, chunks[0])
            return
        if sse:
            self._start_stream()
            for obj in chunks:
                self._sse(obj)
        else:
            self._start_stream("application/json")
            for i, obj in enumerate(chunks):
                self._chunk(("[" if i == 0 else ",\r\n") + json.dumps(obj))
            self._chunk("]")
        self._end_stream()


def _error_body(code: int, message: str) -> dict[str, Any]:
    """An error body every client can read: Anthropic's ``type``/``error.type``, OpenAI's
    ``error.message``/``error.type`` and Google's ``error.code``/``error.status``."""
    etype = "not_found_error" if code == 404 else "invalid_request_error"
    status = "NOT_FOUND" if code == 404 else "INVALID_ARGUMENT"
    return {
        "type": "error",
        "error": {"type": etype, "message": message, "code": code, "status": status},
    }


class FakeModel:
    """A deterministic fake model server on ``127.0.0.1`` speaking the OpenAI chat completions,
    OpenAI responses, Anthropic messages and Gemini APIs (see the module documentation).

    ``think_s`` delays the first byte of every model answer (not ``GET``/``HEAD``/token
    counting). ``reply`` maps a prompt to the answer text (default :func:`default_reply`).
    ``tool_calls`` maps trigger texts to scripted :class:`ToolCall`\\ s. ``prompts`` lists the
    prompts the test will send (see :meth:`find_prompt`). ``stream_chunk_words`` words go in
    each streamed text piece; ``chunk_delay_s`` pauses after each streamed piece.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        think_s: float = 0.0,
        reply: Callable[[str], str] | None = None,
        tool_calls: Mapping[str, ToolCall] | None = None,
        stream_chunk_words: int = 3,
        prompts: Sequence[str] | None = None,
        model: str = "fake-model",
        chunk_delay_s: float = 0.0,
        verbose: bool = False,
    ) -> None:
        if think_s < 0 or chunk_delay_s < 0:
            raise ValueError("think_s and chunk_delay_s must be >= 0")
        self.port = port
        self.think_s = think_s
        self.reply = reply or default_reply
        self.tool_calls: dict[str, ToolCall] = dict(tool_calls or {})
        self.stream_chunk_words = max(1, int(stream_chunk_words))
        self.prompts: list[str] = list(prompts or [])
        self.model = model
        self.chunk_delay_s = chunk_delay_s
        self.verbose = verbose
        self.errors: list[str] = []  # unexpected handler exceptions (client disconnects excluded)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._threads: set[threading.Thread] = set()
        self._conns: set[Any] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash, no ``/v1``)."""
        if self._server is None:
            raise RuntimeError("FakeModel is not running; call start() or use it as a context manager")
        return f"http://{HOST}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        """The bound listening address."""
        if self._server is None:
            raise RuntimeError("FakeModel is not running")
        host, port = self._server.socket.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> FakeModel:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(self, self.port)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="fakemodel"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections (ending any stream) and join all threads."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(5)
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests look at ---------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request seen so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def model_requests(self) -> list[RecordedRequest]:
        """Only the requests that got a model answer (``endpoint`` ``chat`` or ``json``)."""
        return [r for r in self.requests if r.endpoint in ("chat", "json")]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def wait_for_requests(
        self, count: int = 1, timeout: float = 10.0, where: Callable[[RecordedRequest], bool] | None = None
    ) -> list[RecordedRequest]:
        """Block until at least ``count`` recorded requests match ``where``; return them.
        Raises :class:`TimeoutError` if they do not arrive in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [r for r in self._requests if where is None or where(r)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"saw {len(found)} of {count} matching requests")
                self._cond.wait(left)

    def find_prompt(self, text: str) -> str:
        """Map extracted user text to the prompt the reply is derived from: the longest known
        prompt (``prompts=[...]``) occurring in ``text``, compared with whitespace collapsed;
        otherwise ``text`` stripped."""
        norm = " ".join(text.split())
        best: str | None = None
        for known in self.prompts:
            k = " ".join(known.split())
            if k and k in norm and (best is None or len(k) > len(" ".join(best.split()))):
                best = known
        return best if best is not None else text.strip()

    def expected_reply(self, prompt: str) -> str:
        """What the server answers (as text) for a user message ``prompt``."""
        return self.reply(self.find_prompt(prompt))

    # -- internals ------------------------------------------------------------------------

    def _track(self, thread: threading.Thread, conn: Any, *, add: bool) -> None:
        with self._lock:
            if add:
                self._threads.add(thread)
                self._conns.add(conn)
            else:
                self._threads.discard(thread)
                self._conns.discard(conn)

    def _record(self, rec: RecordedRequest) -> None:
        with self._cond:
            self._requests.append(rec)
            self._cond.notify_all()
        if self.verbose:
            what = rec.answer_kind or rec.endpoint
            print(
                f"fakemodel: {rec.method} {rec.path} api={rec.api} {what} streamed={rec.streamed} "
                f"prompt={rec.prompt!r} tools={rec.tools}",
                file=sys.stderr,
                flush=True,
            )

    def _new_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}{next(self._ids):06d}"

    def _think(self) -> bool:
        """Wait ``think_s``; False if the server is stopping."""
        if self.think_s > 0:
            self._stopping.wait(self.think_s)
        return not self._stopping.is_set()

    def _models_payload(self, name: str | None) -> dict[str, Any]:
        """A model list readable by OpenAI (``data``), Anthropic (``data``) and Gemini
        (``models``) clients; with ``name``, one model object."""
        mid = name or self.model
        entry = {
            "id": mid,
            "object": "model",
            "created": 0,
            "owned_by": "fakemodel",
            "type": "model",
            "display_name": mid,
            "created_at": "2024-01-01T00:00:00Z",
        }
        gemini = {
            "name": f"models/{mid}",
            "displayName": mid,
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 65536,
        }
        if name is not None:
            return {**entry, **gemini}
        return {
            "object": "list",
            "data": [entry],
            "has_more": False,
            "first_id": mid,
            "last_id": mid,
            "models": [gemini],
        }

    def _answer_for(self, api: str, body: dict[str, Any], rec: RecordedRequest) -> _Answer:
        conv = _conversation(api, body)
        tools = _declared_tools(api, body)
        rec.declared_tools = tools
        rec.tools = [t.name for t in tools]
        rec.tool_result = conv.tool_result
        rec.user_text = conv.user_text
        prompt = self.find_prompt(conv.user_text or "")
        if self.prompts and prompt not in self.prompts and conv.raw_text:
            raw_match = self.find_prompt(conv.raw_text)
            if raw_match in self.prompts:
                prompt = raw_match
        rec.prompt = prompt
        rec.endpoint = "chat"
        want_json, schema = _json_schema_request(api, body)
        if want_json:
            value = _sample_json(schema) if schema is not None else dict(_DEFAULT_JSON_ANSWER)
            ans = _Answer("json", json.dumps(value))
            rec.endpoint = "json"
        else:
            ans = self._scripted(prompt, conv, tools, body) or _Answer("text", self.reply(prompt))
        rec.answer_kind = ans.kind
        rec.answer = ans.arguments if ans.kind == "tool_call" else ans.text
        if ans.kind == "tool_call" and ans.tool is not None:
            rec.tool_name = ans.tool.name
            rec.tool_args = ans.args
        return ans

    def _scripted(
        self, prompt: str, conv: _Conversation, tools: list[DeclaredTool], body: Any
    ) -> _Answer | None:
        if conv.tool_result or not self.tool_calls:
            return None
        haystacks = [prompt, conv.user_text or ""]
        for trigger, call in self.tool_calls.items():
            if not any(trigger in h for h in haystacks):
                continue
            tool = _choose_tool(call.kind, tools)
            if tool is None:
                declared = ", ".join(t.name for t in tools) or "none"
                return _Answer(
                    "text", f"FAKE-MODEL: no declared tool fits a {call.kind} call (declared: {declared})"
                )
            return _Answer("tool_call", tool=tool, args=_tool_args(call, tool, body))
        return None


def iter_sse(lines: Iterator[bytes]) -> Iterator[tuple[str | None, str]]:
    """Parse a server-sent-event byte stream into ``(event, data)`` pairs (a small helper for
    tests and adapter authors)."""
    event: str | None = None
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:
        yield event, "\n".join(data)
