"""Named keys as the bytes an xterm sends for them, and bracketed paste.

Adapters name keys (``enter``, ``ctrl-c``, ``escape``, ``up`` …); this table turns them into
bytes. Names are case-insensitive; ``ctrl-X`` works for every letter and ``[\\]^_``.
"""

from __future__ import annotations

_BASE: dict[str, bytes] = {
    "enter": b"\r",
    "return": b"\r",
    "cr": b"\r",
    "lf": b"\n",
    "newline": b"\n",
    "tab": b"\t",
    "backtab": b"\x1b[Z",
    "shift-tab": b"\x1b[Z",
    "escape": b"\x1b",
    "esc": b"\x1b",
    "space": b" ",
    "backspace": b"\x7f",
    "delete": b"\x1b[3~",
    "insert": b"\x1b[2~",
    "up": b"\x1b[A",
    "down": b"\x1b[B",
    "right": b"\x1b[C",
    "left": b"\x1b[D",
    "home": b"\x1b[H",
    "end": b"\x1b[F",
    "pageup": b"\x1b[5~",
    "pagedown": b"\x1b[6~",
    "f1": b"\x1bOP",
    "f2": b"\x1bOQ",
    "f3": b"\x1bOR",
    "f4": b"\x1bOS",
    "f5": b"\x1b[15~",
    "f6": b"\x1b[17~",
    "f7": b"\x1b[18~",
    "f8": b"\x1b[19~",
    "f9": b"\x1b[20~",
    "f10": b"\x1b[21~",
    "f11": b"\x1b[23~",
    "f12": b"\x1b[24~",
    "alt-enter": b"\x1b\r",
    "shift-enter": b"\x1b\r",
}

for _i, _c in enumerate("abcdefghijklmnopqrstuvwxyz"):
    _BASE[f"ctrl-{_c}"] = bytes([_i + 1])
_BASE.update({"ctrl-[": b"\x1b", "ctrl-\\": b"\x1c", "ctrl-]": b"\x1d", "ctrl-^": b"\x1e",
              "ctrl-_": b"\x1f", "ctrl-space": b"\x00", "ctrl-@": b"\x00"})

KEYS: dict[str, bytes] = dict(_BASE)

PASTE_START = b"\x1b[200~"
PASTE_END = b"\x1b[201~"


def is_key(name: str) -> bool:
    return name.lower() in KEYS


def key_bytes(name: str) -> bytes:
    """Bytes for a named key; raises ``KeyError`` naming the key when unknown."""
    try:
        return KEYS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown key name {name!r}") from None


def bracketed_paste(text: str) -> bytes:
    """Wrap text in bracketed-paste markers; end markers inside the text are removed."""
    body = text.encode("utf-8")
    while PASTE_END in body or PASTE_START in body:  # removing one may join another
        body = body.replace(PASTE_END, b"").replace(PASTE_START, b"")
    return PASTE_START + body + PASTE_END


def key_names() -> list[str]:
    return sorted(KEYS)
