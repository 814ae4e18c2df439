"""The host link's messages: frames of pickled batches, and events and errors made small.

Both ends are aimterm processes of one user on one machine (the controller and a host it
started, over a socketpair it made), so pickle is safe here and much the fastest encoding. An
event goes as ``(kind, values)``: a slotted dataclass or an enum pickled whole costs several
times as much, and a busy fleet sends four events a turn. An error goes as its class and
attributes, rebuilt without calling its ``__init__`` (the error classes take keyword-only
context that pickle would not pass back).
"""

from __future__ import annotations

import dataclasses
import importlib
import pickle
import struct
from collections.abc import Callable, Iterator
from typing import Any

from aimterm.events import Event, StateChanged, event_classes
from aimterm.states import State
from aimterm.term.loop import IOLoop

__all__ = ["FrameReader", "MAX_FRAME", "Outbox", "decode_error", "decode_event",
           "encode_error", "encode_event", "frame"]

_LEN = struct.Struct("!I")
#: The largest batch either side accepts: far above any real one (a screen is ~10 KB, a read
#: at most 64 KB), low enough that a corrupt length cannot make a process allocate gigabytes.
MAX_FRAME = 64 * 1024 * 1024

_STATES: dict[str, State] = {s.value: s for s in State}


def frame(messages: list[Any]) -> bytes:
    body = pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(body)) + body


class Outbox:
    """Messages gathered on a loop into one frame per loop pass, handed to ``write`` in the
    order they were sent (from any thread: others hand over to the loop)."""

    def __init__(self, ioloop: IOLoop, write: Callable[[bytes], None]) -> None:
        self._ioloop = ioloop
        self._write = write
        self._out: list[Any] = []
        self._due = False

    def send(self, msg: Any) -> None:
        if not self._ioloop.in_loop():
            self._ioloop.call_soon(self.send, msg)
            return
        self._out.append(msg)
        if not self._due:
            self._due = True
            self._ioloop.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what is gathered now (loop thread)."""
        self._due = False
        out, self._out = self._out, []
        if out:
            self._write(frame(out))


class FrameReader:
    """Bytes in, batches out; a frame cut by a read waits for the rest."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[list[Any]]:
        buf = self._buf
        buf += data
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            if size > MAX_FRAME:
                raise ValueError(f"host frame of {size} bytes is over the {MAX_FRAME} limit")
            if len(buf) - pos - 4 < size:
                break
            batch = pickle.loads(memoryview(buf)[pos + 4:pos + 4 + size])
            pos += 4 + size
            yield batch
        if pos:
            del buf[:pos]


_FIELDS: dict[type[Event], tuple[str, ...]] = {}
_CLASSES: dict[str, type[Event]] = {}


def _fields(cls: type[Event]) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def encode_event(event: Event) -> tuple[str, tuple[Any, ...]]:
    if type(event) is StateChanged:  # the commonest: its two State fields go as strings
        return ("state_changed", (event.instance, event.ts, event.mono, str(event.old),
                                  str(event.new), event.reason, event.rule, event.text))
    return (event.kind, tuple(getattr(event, name) for name in _fields(type(event))))


def decode_event(data: tuple[str, tuple[Any, ...]]) -> Event:
    kind, values = data
    if kind == "state_changed":
        iid, ts, mono, old, new, reason, rule, text = values
        return StateChanged(iid, old=_STATES[old], new=_STATES[new], reason=reason, rule=rule,
                            text=text, ts=ts, mono=mono)
    cls = _CLASSES.get(kind)
    if cls is None:
        _CLASSES.update(event_classes())
        cls = _CLASSES[kind]
    return cls(**dict(zip(_fields(cls), values, strict=True)))


def encode_error(exc: BaseException) -> tuple[str, str, str, dict[str, Any]]:
    cls = type(exc)
    state = {k: v for k, v in getattr(exc, "__dict__", {}).items() if _plain(v)}
    return (cls.__module__, cls.__qualname__, str(exc), state)


def decode_error(data: tuple[str, str, str, dict[str, Any]]) -> BaseException:
    module, qualname, message, state = data
    cls: Any = None
    if module.startswith("aimterm.") or module == "builtins":
        try:
            cls = importlib.import_module(module)
            for part in qualname.split("."):
                cls = getattr(cls, part)
        except (ImportError, AttributeError):
            cls = None
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return RuntimeError(f"{qualname}: {message}")
    exc = cls.__new__(cls)
    BaseException.__init__(exc, message)
    exc.__dict__.update(state)
    return exc


def _plain(value: object) -> bool:
    """Whether an error attribute crosses as it is (context, not live objects)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False
