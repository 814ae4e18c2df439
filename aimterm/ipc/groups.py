"""Groups a client holds in the daemon's fleet: the streaming op ``group``.

A client that needs instances of its own — a Python :class:`~aimterm.jobs.orchestrator.
Orchestrator` whose jobs no instance of the cluster fits — gets them in the daemon's fleet,
not in its own process: they are in ``cluster status``, attachable, logged, like any other.
They live as long as the stream that asked for them. The client ends them with the input
``{"stop": true}`` (the stream ends once they have stopped); a client that goes away without
a word ends them too, so a killed script leaves no agents behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aimterm.adapter.registry import load_adapter
from aimterm.adapter.schema import NAME_PATTERN
from aimterm.errors import NoSuchTool, ProtocolError
from aimterm.ipc.jobs import PoolFleet
from aimterm.ipc.server import Stream

if TYPE_CHECKING:
    from aimterm.daemon import Daemon

__all__ = ["DaemonGroups"]

log = logging.getLogger(__name__)

#: Instances one held group may have, variables it may set, arguments it may add.
MAX_GROUP_COUNT = 64
MAX_ENV = 256
MAX_ARGS = 64
_MAX_TEXT = 4096
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: How long ``stop`` waits for the group's instances to finish their turns and exit.
STOP_TIMEOUT_S = 30.0


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) > _MAX_TEXT or "\x00" in value:
        raise ProtocolError(f"'{name}' must be a string of at most {_MAX_TEXT} characters")
    return value


def _check(args: Mapping[str, Any]) -> tuple[str, int, str, dict[str, str], list[str]]:
    """(tool, count, cwd, env, args) of a ``group`` request, each bounded."""
    tool = args.get("tool")
    if not isinstance(tool, str) or not re.fullmatch(NAME_PATTERN, tool) or len(tool) > 64:
        raise ProtocolError(f"group takes 'tool': an adapter name ({NAME_PATTERN})")
    count = args.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_GROUP_COUNT:
        raise ProtocolError(f"'count' must be an integer from 1 to {MAX_GROUP_COUNT}")
    cwd = _text(args.get("cwd"), "cwd")
    if not os.path.isabs(cwd) or not os.path.isdir(cwd):
        raise ProtocolError(f"'cwd' must be an absolute path to a folder: {cwd[:200]!r}")
    env = args.get("env") or {}
    if not isinstance(env, dict) or len(env) > MAX_ENV:
        raise ProtocolError(f"'env' must be a mapping of at most {MAX_ENV} variables")
    for key, value in env.items():
        if not _ENV_KEY.match(key) or len(key) > 256:
            raise ProtocolError(f"'env': {key[:80]!r} is not a variable name")
        _text(value, f"env.{key}")
    extra = args.get("args") or []
    if not isinstance(extra, list) or len(extra) > MAX_ARGS:
        raise ProtocolError(f"'args' must be a list of at most {MAX_ARGS} strings")
    return tool, count, cwd, dict(env), [_text(a, "args") for a in extra]


class DaemonGroups:
    """The held groups of one daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def streaming(self) -> dict[str, Any]:
        return {"group": self.hold}

    async def hold(self, args: dict[str, Any], stream: Stream) -> None:
        """``{tool, cwd, count?, env?, args?}``: start the group; the first item names it and
        its instances (``{group, instances}``); input ``{"stop": true}`` stops them and ends
        the stream. Its instances' ids are ``GROUP-1``, … with GROUP ``TOOL-xxxx``."""
        tool, count, cwd, env, extra = _check(args)
        pool = self.daemon.pool
        assert pool is not None
        await asyncio.to_thread(load_adapter, tool)  # AdapterNotFound: the reply's own code
        name = await asyncio.to_thread(PoolFleet(pool, self.daemon).hold_group, tool, cwd=cwd,
                                       env=env, args=extra, count=count)
        stopped = False
        try:
            ids = [r["id"] for r in pool.status() if r["group"] == name]
            await stream.send({"group": name, "instances": ids})
            while True:
                data = await stream.inputs.get()
                if data.get("stop") is True:
                    break
                await stream.send({"error": {"code": "bad_request",
                                             "message": "the input of group is {\"stop\": true}"}})
            gone = pool.remove_group(name)
            stopped = True
            try:
                await asyncio.wait_for(asyncio.wrap_future(gone), STOP_TIMEOUT_S)
            except asyncio.TimeoutError:
                log.warning("group %s: its instances did not stop in %gs", name, STOP_TIMEOUT_S)
        finally:
            if not stopped and not self.daemon.closed:
                # The client went away (or cancelled): its instances go too.
                try:
                    pool.remove_group(name)
                except (NoSuchTool, RuntimeError):
                    pass
