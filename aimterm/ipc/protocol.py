"""The wire format of the control socket, protocol version 1 (see ``docs/protocol.md``).

Newline-delimited JSON over a Unix stream socket: one object per line, UTF-8, at most
:data:`MAX_LINE` bytes. Every message carries ``"v": 1``. The server greets first
(:func:`hello`); then the client sends requests and the server answers each by ``id``:

- a reply: ``{"v", "id", "ok": true, "result"}`` or ``{"v", "id", "ok": false, "error"}``;
- for a streaming op: any number of ``{"v", "id", "item"}`` then ``{"v", "id", "end": true}``
  (or an error reply);
- the client may send ``{"v", "id", "input"}`` to a running stream, and cancel any request
  with the ``cancel`` op.

Errors cross the wire as objects with a stable ``code``; :func:`error_to_wire` and
:func:`error_from_wire` translate between them and the classes of :mod:`aimterm.errors`.
This module is pure (no sockets) so both ends and the tests share it.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aimterm.errors import AimtermError, ProtocolError, RemoteError, UnsupportedVersion
from aimterm.paths import runtime_dir
from aimterm.version import __version__

__all__ = [
    "CANCEL_OP",
    "MAX_ERROR_TEXT",
    "MAX_LINE",
    "PROTOCOL_VERSION",
    "Request",
    "decode",
    "default_socket_path",
    "encode",
    "end",
    "error_class",
    "error_from_wire",
    "error_reply",
    "error_to_wire",
    "hello",
    "input_message",
    "item",
    "ok_reply",
    "parse_request",
    "request",
]

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (PROTOCOL_VERSION,)
#: Longest line either side accepts, newline included.
MAX_LINE = 16 * 1024 * 1024
#: How deeply a message may nest objects and arrays (every op needs three or four levels).
MAX_DEPTH = 32
#: The one op every server handles itself: ``{"id": <request to cancel>}``.
CANCEL_OP = "cancel"
#: Most characters of an error's message and of each value of its context on the wire. An
#: error may echo what it was given (an op name or a prompt of megabytes): bounded, its reply
#: always fits a line.
MAX_ERROR_TEXT = 64 * 1024
#: Fields of an error object that are not the error's own context.
_ERROR_KEYS = frozenset({"code", "message", "expected", "exit_code"})
#: Modules whose error classes are loaded before the registry is built, so their codes map
#: back to their classes even in a client that never imported them.
_ERROR_MODULES = ("aimterm.errors", "aimterm.router")


def default_socket_path() -> str:
    """Where the daemon listens: ``$XDG_RUNTIME_DIR/aimterm/control.sock``, or
    ``/tmp/aimterm-<uid>/control.sock`` without a runtime dir."""
    return str(runtime_dir() / "control.sock")


# -- framing -----------------------------------------------------------------------------------

def encode(msg: Mapping[str, Any]) -> bytes:
    """One message as a line. Raises :class:`ProtocolError` if it would exceed MAX_LINE and
    ``TypeError`` / ``ValueError`` if it is not JSON (no NaN: other languages reject it)."""
    data = json.dumps(msg, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    line = data.encode("utf-8") + b"\n"
    if len(line) > MAX_LINE:
        raise ProtocolError(f"message of {len(line)} bytes exceeds the {MAX_LINE}-byte limit")
    return line


def decode(line: bytes | str) -> dict[str, Any]:
    """Parse one line into a message and check its version.

    Raises :class:`ProtocolError` (``bad_request``) for anything that is not a JSON object
    within the size limit, and :class:`UnsupportedVersion` for another ``v``."""
    size = len(line) if isinstance(line, bytes) else len(line.encode("utf-8", "replace"))
    if size > MAX_LINE:
        raise ProtocolError(f"line of {size} bytes exceeds the {MAX_LINE}-byte limit")
    try:
        # Decoded here: json.loads would also take UTF-16 and UTF-32, and the wire is UTF-8.
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        msg = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"not valid JSON: {exc}") from None
    except RecursionError:  # (the parser recurses per level: thousands of '[' exhaust it)
        raise ProtocolError(f"a message may nest at most {MAX_DEPTH} levels") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(msg).__name__}")
    # The walk is for what the text can hold: deep nesting takes that many brackets, and a
    # lone surrogate a \uD8xx-\uDFxx escape (the text itself was strict UTF-8). Most
    # messages have neither, and walking every value of each was most of a client's decode.
    if text.count("{") + text.count("[") > MAX_DEPTH or "\\ud" in text or "\\uD" in text:
        _check_value(msg, 0)
    if "v" not in msg:
        raise ProtocolError("a message needs a protocol version 'v'")
    if msg["v"] not in SUPPORTED_VERSIONS or isinstance(msg["v"], bool):
        raise UnsupportedVersion(msg["v"], SUPPORTED_VERSIONS)
    return msg


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, and the encoders of both ends refuse them.
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # (1e400: valid JSON, but no double holds it)
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _check_value(value: Any, depth: int) -> None:
    """Refuse what JSON allows but nothing downstream can hold: nesting past MAX_DEPTH, and
    strings with lone surrogates (``"\\ud800"``: not text; UTF-8 cannot encode it)."""
    if depth > MAX_DEPTH:
        raise ProtocolError(f"a message may nest at most {MAX_DEPTH} levels")
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ProtocolError("a string holds a lone surrogate (not valid Unicode text)"
                                    ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_value(key, depth + 1)
            _check_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)


# -- messages ----------------------------------------------------------------------------------

def hello(pid: int | None = None, **extra: Any) -> dict[str, Any]:
    """The server's greeting, the first line on every accepted connection."""
    info: dict[str, Any] = {"server": "aimterm", "version": __version__,
                            "protocol": PROTOCOL_VERSION,
                            "pid": os.getpid() if pid is None else pid}
    info.update(extra)
    return {"v": PROTOCOL_VERSION, "hello": info}


def request(req_id: int, op: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": req_id, "op": op, "args": dict(args or {})}


def ok_reply(req_id: int, result: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": req_id, "ok": True, "result": result}


def error_reply(req_id: int | None, exc: BaseException) -> dict[str, Any]:
    """An error reply; ``req_id`` is None for an error about the connection itself."""
    return {"v": PROTOCOL_VERSION, "id": req_id, "ok": False, "error": error_to_wire(exc)}


def item(req_id: int, payload: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": req_id, "item": payload}


def end(req_id: int, *, cancelled: bool = False) -> dict[str, Any]:
    msg: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": req_id, "end": True}
    if cancelled:
        msg["cancelled"] = True
    return msg


def input_message(req_id: int, payload: Mapping[str, Any]) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": req_id, "input": dict(payload)}


@dataclass(frozen=True)
class Request:
    """A message from the client: a call of ``op``, or (``op`` None) ``input`` for stream ``id``."""

    id: int
    op: str | None
    args: dict[str, Any]
    input: dict[str, Any] | None = None


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_request(msg: Mapping[str, Any]) -> Request:
    """Check the fields of a decoded client message. Raises :class:`ProtocolError`."""
    req_id = msg.get("id")
    if not _is_id(req_id):
        raise ProtocolError(f"a request needs an integer 'id', got {_short(req_id)}")
    assert isinstance(req_id, int)
    if "input" in msg:
        payload = msg["input"]
        if not isinstance(payload, dict):
            raise ProtocolError("'input' must be a JSON object")
        return Request(req_id, None, {}, payload)
    op = msg.get("op")
    if not isinstance(op, str) or not op:
        raise ProtocolError("a request needs an 'op' (a non-empty string)")
    args = msg.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ProtocolError(f"'args' of {op!r} must be a JSON object")
    if op == CANCEL_OP and not _is_id(args.get("id")):
        raise ProtocolError("cancel needs args {'id': <request id>}")
    return Request(req_id, op, args)


def _short(value: Any, most: int = 80) -> str:
    """``repr(value)`` cut to ``most`` characters, for an error message that names it."""
    text = repr(value)
    return text if len(text) <= most else text[:most - 1] + "…"


# -- errors ------------------------------------------------------------------------------------

def _cut(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT - 1] + "…"


def _jsonable(value: Any) -> Any:
    """``value`` for the context of an error object: as it is if it is JSON within
    MAX_ERROR_TEXT characters, else as (cut) text."""
    if isinstance(value, str):
        return _cut(value)
    try:
        data = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return _cut(str(value))
    return value if len(data) <= MAX_ERROR_TEXT else _cut(data)


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    """The error object for ``exc``: an :class:`AimtermError` is *expected* and keeps its
    code and context; anything else is a crash, ``internal``, with no traceback."""
    if isinstance(exc, AimtermError):
        # The context: the error's public attributes (not every class lists them all in
        # to_dict), then to_dict() itself. A reply must always go out, so a to_dict that
        # fails (an instance missing an attribute) does not stop it.
        context = {k: v for k, v in vars(exc).items() if not k.startswith("_")}
        try:
            context.update(exc.to_dict())
        except Exception:
            pass
        data = {key: _jsonable(value) for key, value in context.items()}
        data["code"] = exc.code
        data["message"] = _cut(exc.message)
        data["exit_code"] = exc.exit_code
        data["expected"] = bool(getattr(exc, "expected", True))
        return data
    return {"code": "internal", "exit_code": AimtermError.exit_code, "expected": False,
            "message": f"internal error ({type(exc).__name__}); the server log has the details"}


def _walk(cls: type[AimtermError]) -> list[type[AimtermError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_walk(sub))
    return out


def _registry() -> dict[str, type[AimtermError]]:
    for name in _ERROR_MODULES:
        importlib.import_module(name)
    found: dict[str, type[AimtermError]] = {}
    for cls in _walk(AimtermError):
        if cls is RemoteError or cls is AimtermError:
            continue
        # aimterm's own classes win over a same-code subclass defined elsewhere.
        if cls.code not in found or (not found[cls.code].__module__.startswith("aimterm.")
                                     and cls.__module__.startswith("aimterm.")):
            found[cls.code] = cls
    return found


def error_class(code: str) -> type[AimtermError] | None:
    """The aimterm error class whose ``code`` this is, or None."""
    # Walked on each call: cheap, and it sees classes defined after the first call.
    return _registry().get(code)


def error_from_wire(data: Mapping[str, Any]) -> AimtermError:
    """Rebuild the error of an error object: an instance of the class with that ``code``
    (its ``str()`` is the server's message, its context attributes are set), or a
    :class:`RemoteError` for a crash or a code this side does not know."""
    if not isinstance(data, Mapping):
        return ProtocolError(f"malformed error object: {data!r}")
    code = str(data.get("code") or "internal")
    message = str(data.get("message") or code)
    extra = {k: v for k, v in data.items() if k not in _ERROR_KEYS}
    expected = data.get("expected", True) is not False
    cls = error_class(code) if expected else None
    if cls is None:
        exit_code = data.get("exit_code")
        if not isinstance(exit_code, int) or isinstance(exit_code, bool):
            exit_code = AimtermError.exit_code
        return RemoteError(code, message, expected=expected, extra=extra, exit_code=exit_code)
    # The classes have their own constructors (an instance name, a path...); the server
    # already formatted the message, so build the instance bare and set its context.
    exc = cls.__new__(cls)
    AimtermError.__init__(exc, message)
    for key, value in extra.items():
        if not hasattr(type(exc), key) or not callable(getattr(type(exc), key)):
            try:
                setattr(exc, key, value)
            except AttributeError:
                pass
    return exc
