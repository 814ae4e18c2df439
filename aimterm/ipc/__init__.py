"""The control socket of the daemon (layer L4): wire protocol, server and clients.

- :mod:`aimterm.ipc.protocol` — protocol version 1: newline-delimited JSON, the hello,
  requests, replies, streams, and errors on the wire (pure, no sockets);
- :mod:`aimterm.ipc.server` — :class:`ControlServer`, a whitelist of async ops served on a
  private Unix socket from the shared reader loop;
- :mod:`aimterm.ipc.client` — :class:`ControlClient` (blocking) and
  :class:`AsyncControlClient` (asyncio).

Names are re-exported lazily, so importing the client does not start or import the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "AsyncControlClient",
    "ControlClient",
    "ControlServer",
    "PROTOCOL_VERSION",
    "Stream",
    "default_socket_path",
]

_LAZY = {
    "AsyncControlClient": ("aimterm.ipc.client", "AsyncControlClient"),
    "ControlClient": ("aimterm.ipc.client", "ControlClient"),
    "ControlServer": ("aimterm.ipc.server", "ControlServer"),
    "Stream": ("aimterm.ipc.server", "Stream"),
    "PROTOCOL_VERSION": ("aimterm.ipc.protocol", "PROTOCOL_VERSION"),
    "default_socket_path": ("aimterm.ipc.protocol", "default_socket_path"),
}

if TYPE_CHECKING:  # pragma: no cover
    from aimterm.ipc.client import AsyncControlClient, ControlClient
    from aimterm.ipc.protocol import PROTOCOL_VERSION, default_socket_path
    from aimterm.ipc.server import ControlServer, Stream


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'aimterm.ipc' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value
