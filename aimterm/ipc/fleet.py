"""The fleet of a daemon, driven from another process: :class:`RemoteFleet`.

It implements :class:`~aimterm.fleet.Fleet` over the control socket with one
:class:`~aimterm.ipc.client.ControlClient`: each call is one op (see
:mod:`aimterm.ipc.ops`), and each reply is turned into what the in-process fleet
(:class:`~aimterm.cluster.ClusterManager`) returns — a :class:`~aimterm.turn.Turn`, a
:class:`~aimterm.states.State`, a :class:`~aimterm.fleet.TurnRecord`, the same dicts — and
each error reply into the same error class. Prompts in flight do not hold a thread each:
their futures are resolved by the client's reader thread.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import threading
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from aimterm.config import SOCKET_NAME, default_state_dir
from aimterm.errors import ProtocolError
from aimterm.fleet import TurnRecord, turn_from_dict
from aimterm.ipc.client import ClientStream, ControlClient
from aimterm.states import State
from aimterm.turn import Turn

__all__ = ["RemoteFleet"]


class RemoteFleet:
    """A daemon's fleet. ``RemoteFleet(path)`` connects to the socket at ``path`` and closes
    the connection on :meth:`close`; without a path, to the socket of the cluster in
    ``state_dir`` — by default where ``aimterm cluster up`` (no ``-c``) listens.
    ``RemoteFleet(client=…)`` uses a connected client and leaves it open."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 state_dir: str | os.PathLike[str] | None = None,
                 client: ControlClient | None = None, timeout: float | None = 30.0) -> None:
        self._owned = client is None
        if client is None:
            client = ControlClient(path if path is not None else self.socket_of(state_dir),
                                   timeout=timeout)
        self.client = client
        self._held: dict[str, tuple[ClientStream, Iterator[Any]]] = {}
        self._held_lock = threading.Lock()

    @staticmethod
    def socket_of(state_dir: str | os.PathLike[str] | None = None) -> Path:
        """The socket of the cluster in ``state_dir`` (default: the default cluster's)."""
        return (Path(state_dir) if state_dir is not None else default_state_dir()) / SOCKET_NAME

    def close(self) -> None:
        if self._owned:
            self.client.close()

    def __enter__(self) -> RemoteFleet:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- prompts -------------------------------------------------------------------------------

    def submit(self, prompt: str, *, tool: str | None = None, key: str | None = None,
               tags: Iterable[str] = (), to: str | None = None,
               timeout: float | None = None) -> concurrent.futures.Future[Turn]:
        args = {"prompt": prompt, "tool": tool, "key": key, "tags": list(tags), "to": to,
                "timeout": timeout}
        reply = self.client.request_future("send", {k: v for k, v in args.items()
                                                    if v not in (None, [])})
        turn: concurrent.futures.Future[Turn] = concurrent.futures.Future()

        def convert(done: concurrent.futures.Future[Any]) -> None:
            if done.cancelled():
                turn.cancel()
            elif not turn.set_running_or_notify_cancel():
                return
            elif (error := done.exception()) is not None:
                turn.set_exception(error)
            else:
                try:
                    turn.set_result(turn_from_dict(done.result()))
                except (KeyError, TypeError, ValueError) as exc:
                    turn.set_exception(exc)

        def forward_cancel(done: concurrent.futures.Future[Turn]) -> None:
            if done.cancelled():
                reply.cancel()

        turn.add_done_callback(forward_cancel)
        reply.add_done_callback(convert)
        return turn

    def send(self, prompt: str, *, tool: str | None = None, key: str | None = None,
             tags: Iterable[str] = (), to: str | None = None,
             timeout: float | None = None) -> Turn:
        return self.submit(prompt, tool=tool, key=key, tags=tags, to=to,
                           timeout=timeout).result()

    def map(self, prompts: Iterable[str], *, tool: str | None = None,
            timeout: float | None = None) -> list[Turn]:
        futures = [self.submit(p, tool=tool, timeout=timeout) for p in prompts]
        concurrent.futures.wait(futures)
        return [f.result() for f in futures]

    # -- control -------------------------------------------------------------------------------

    def answer(self, instance_id: str, keys: str | Sequence[str]) -> None:
        self.client.call("answer", id=instance_id,
                         keys=keys if isinstance(keys, str) else list(keys))

    def interrupt(self, instance_id: str) -> None:
        self.client.call("interrupt", id=instance_id)

    def drain(self, instance_id: str) -> concurrent.futures.Future[None]:
        reply = self.client.request_future("drain", {"id": instance_id, "wait": True})
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def convert(finished: concurrent.futures.Future[Any]) -> None:
            if not done.set_running_or_notify_cancel():
                return
            if finished.cancelled():
                done.cancel()
            elif (error := finished.exception()) is not None:
                done.set_exception(error)
            else:
                done.set_result(None)

        reply.add_done_callback(convert)
        return done

    def scale(self, tool: str, count: int) -> None:
        self.client.call("scale", tool=tool, count=count)

    # -- groups held for the caller -------------------------------------------------------------

    def hold_group(self, tool: str, *, cwd: str, env: Mapping[str, str] | None = None,
                   args: Sequence[str] = (), count: int = 1) -> str:
        """Start ``count`` instances of ``tool`` in ``cwd`` in the daemon's fleet, held for
        this connection (see :mod:`aimterm.ipc.groups`): the group's name. They stop at
        :meth:`release_group`, or when this fleet's connection closes."""
        stream = self.client.open_stream("group", {
            "tool": tool, "cwd": os.fspath(cwd), "env": dict(env or {}), "args": list(args),
            "count": count}, timeout=self.client.timeout)
        items = iter(stream)
        try:
            first = next(items)
        except StopIteration:
            raise ProtocolError("the daemon ended the group before naming it") from None
        name = str(first["group"])
        with self._held_lock:
            self._held[name] = (stream, items)
        return name

    def release_group(self, name: str) -> concurrent.futures.Future[None]:
        """Stop a held group's instances (each finishes its turn); done once they have."""
        with self._held_lock:
            stream, items = self._held.pop(name)
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def wait() -> None:
            try:
                stream.send_input({"stop": True})
                for _ in items:  # (nothing comes but the end, once the instances stopped)
                    pass
                done.set_result(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.set_exception(exc)

        threading.Thread(target=wait, daemon=True, name=f"aimterm-release-{name}").start()
        return done

    def restart(self, instance_id: str) -> State:
        # A restart waits for the tool to start again: as long as its start-up may take.
        result = self.client.request("restart", {"id": instance_id}, timeout=None)
        return State(result["state"])

    # -- views ---------------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.client.call("status")["instances"]
        return rows

    def screen(self, instance_id: str) -> list[str]:
        lines: list[str] = self.client.call("screen", id=instance_id)["lines"]
        return lines

    def turns(self, instance_id: str | None = None, *, limit: int = 20) -> list[TurnRecord]:
        args: dict[str, Any] = {"limit": limit}
        if instance_id is not None:
            args["id"] = instance_id
        known = {f.name for f in dataclasses.fields(TurnRecord)}  # a newer daemon may add some
        return [TurnRecord(**{k: v for k, v in row.items() if k in known})
                for row in self.client.request("turns", args)["turns"]]

    def events(self, *, kinds: Sequence[str] = (), instance_id: str | None = None,
               since: int = 0, follow: bool = False) -> Generator[dict[str, Any], None, None]:
        args: dict[str, Any] = {"since": since, "follow": follow,
                                "kinds": [kinds] if isinstance(kinds, str) else list(kinds)}
        if instance_id is not None:
            args["instance"] = instance_id
        return self._events(args)

    def _events(self, args: dict[str, Any]) -> Generator[dict[str, Any], None, None]:
        # Opened on the first next(): a stream nobody reads is never started. Leaving the
        # iteration early (or closing the generator) cancels it on the server.
        with self.client.open_stream("events", args) as stream:
            yield from stream
