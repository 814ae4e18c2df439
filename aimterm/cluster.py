"""The Python API people reach for: a cluster of tool instances behind one object.

:class:`ClusterManager` wraps a :class:`~aimterm.pool.Pool` with the calls scripts use —
``send`` (blocking), ``submit`` (a future), ``map``, ``read_any``, async variants — and
:func:`launch_cluster` starts one in a line. :class:`ToolProcessPool` keeps the request-id
style API (``send_prompt`` / ``read_response``) of the project's original plan.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import queue
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aimterm.adapter.spec import AdapterSpec
from aimterm.pool import GroupSpec, Pool, RestartPolicy, SetupHook
from aimterm.router import RoutingStrategy
from aimterm.session import Turn
from aimterm.states import State

__all__ = ["ClusterManager", "RoutingStrategy", "ToolProcessPool", "launch_cluster"]


class ClusterManager:
    """Several instances of one or more tools, driven as one.

    ``tools`` is an adapter name (with ``count``), or a mapping ``{adapter: count}``, or a list
    of :class:`~aimterm.pool.GroupSpec` for full control (cwd, env, tags, stagger, setup hook).
    """

    def __init__(self, tools: str | AdapterSpec | Mapping[str, int] | Sequence[GroupSpec],
                 count: int = 3, *, routing: RoutingStrategy | str = "round_robin",
                 cwd: str | None = None, env: Mapping[str, str] | None = None,
                 setup: SetupHook | None = None, stagger_ms: int = 0,
                 queue_size: int = 1000, queue_timeout_s: float | None = None,
                 restart: RestartPolicy | None = None, retry_turns: int = 1) -> None:
        groups: list[GroupSpec]
        common: dict[str, Any] = {"cwd": cwd, "env": dict(env or {}), "setup": setup,
                                  "stagger_ms": stagger_ms}
        if isinstance(tools, (str, AdapterSpec)):
            groups = [GroupSpec(tools, count=count, **common)]
        elif isinstance(tools, Mapping):
            groups = [GroupSpec(name, count=n, **common) for name, n in tools.items()]
        else:
            groups = list(tools)
        self.pool = Pool(groups, routing=routing, queue_size=queue_size,
                         queue_timeout_s=queue_timeout_s, restart=restart,
                         retry_turns=retry_turns)
        self._done: queue.Queue[concurrent.futures.Future[Turn]] = queue.Queue()

    # -- life cycle --------------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float | None = None) -> ClusterManager:
        self.pool.start(wait=wait, timeout=timeout)
        return self

    def shutdown(self, timeout: float = 10.0) -> None:
        self.pool.shutdown(timeout)

    def __enter__(self) -> ClusterManager:
        if not self.pool.started:
            self.pool.__enter__()  # (which shuts a half-started fleet down if start fails)
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- prompts -----------------------------------------------------------------------------

    def submit(self, prompt: str, key: str | None = None, *, tool: str | None = None,
               tags: Iterable[str] = (), to: str | None = None, timeout: float | None = None
               ) -> concurrent.futures.Future[Turn]:
        """Queue a prompt; the future resolves to its :class:`~aimterm.session.Turn`, and
        :meth:`read_any` sees it when it finishes."""
        future = self.pool.submit(prompt, tool=tool, key=key, tags=tags, to=to, timeout=timeout)
        future.add_done_callback(self._done.put)
        return future

    def broadcast(self, prompt: str, *, tool: str | None = None,
                  timeout: float | None = None) -> dict[str, concurrent.futures.Future[Turn]]:
        """The same prompt to every active instance (of ``tool``): instance id -> future."""
        ids = [r["id"] for r in self.pool.status()
               if r["lifecycle"] == "active" and (tool is None or r["adapter"] == tool)]
        return {iid: self.submit(prompt, to=iid, timeout=timeout) for iid in ids}

    def send(self, prompt: str, *, tool: str | None = None, key: str | None = None,
             tags: Iterable[str] = (), timeout: float | None = None) -> Turn:
        """Route a prompt to a free instance and wait for its turn."""
        return self.pool.submit(prompt, tool=tool, key=key, tags=tags, timeout=timeout).result()

    def send_to(self, instance_id: str, prompt: str, *, timeout: float | None = None) -> Turn:
        """Send to one named instance (waits for it to be free)."""
        return self.pool.submit(prompt, to=instance_id, timeout=timeout).result()

    def map(self, prompts: Iterable[str], *, tool: str | None = None,
            timeout: float | None = None) -> list[Turn]:
        """Run every prompt across the cluster in parallel; turns come back in prompt order.
        Waits for all of them, then raises the first failure (its ``.prompt`` says which);
        use :meth:`submit` to handle failures one by one."""
        futures = [self.pool.submit(p, tool=tool, timeout=timeout) for p in prompts]
        concurrent.futures.wait(futures)
        return [f.result() for f in futures]

    def read_any(self, timeout: float | None = None) -> Turn:
        """The next turn to finish among those started with :meth:`submit`, in finishing order.
        Raises the prompt's error if it failed, ``TimeoutError`` if none finishes in time."""
        try:
            future = self._done.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("no submitted prompt finished in time") from None
        return future.result()

    async def asubmit(self, prompt: str, key: str | None = None, *, tool: str | None = None,
                      timeout: float | None = None) -> Turn:
        return await asyncio.wrap_future(self.submit(prompt, key, tool=tool, timeout=timeout))

    async def asend(self, prompt: str, *, tool: str | None = None, key: str | None = None,
                    timeout: float | None = None) -> Turn:
        future = self.pool.submit(prompt, tool=tool, key=key, timeout=timeout)
        return await asyncio.wrap_future(future)

    async def amap(self, prompts: Iterable[str], *, tool: str | None = None,
                   timeout: float | None = None) -> list[Turn]:
        futures = [asyncio.wrap_future(self.pool.submit(p, tool=tool, timeout=timeout))
                   for p in prompts]
        return list(await asyncio.gather(*futures))

    # -- control and views -------------------------------------------------------------------

    def answer(self, instance_id: str, keys: str | Sequence[str]) -> None:
        self.pool.answer(instance_id, keys)

    def scale(self, tool: str, count: int) -> None:
        self.pool.scale(tool, count)

    def restart(self, instance_id: str) -> State:
        return self.pool.restart_instance(instance_id)

    def drain(self, instance_id: str) -> concurrent.futures.Future[None]:
        return self.pool.drain(instance_id)

    def get_status(self) -> list[dict[str, Any]]:
        """Each instance's id, adapter, state, pid, turns done and restarts (and more)."""
        return self.pool.status()

    def subscribe(self, listener: Any) -> Any:
        """Receive every event of the fleet (state changes, answers, restarts, retries)."""
        return self.pool.bus.subscribe(listener)


def launch_cluster(tool_id: str | AdapterSpec, count: int = 3,
                   routing: RoutingStrategy | str = "round_robin", **kwargs: Any
                   ) -> ClusterManager:
    """Start ``count`` instances of ``tool_id`` and return the running cluster (a context
    manager that shuts it down)."""
    return ClusterManager(tool_id, count, routing=routing, **kwargs).start()


class ToolProcessPool:
    """Request-id style API over a pool of one tool: ``send_prompt`` returns an id,
    ``read_response`` collects the turn."""

    def __init__(self, tool_id: str | AdapterSpec, count: int = 3, *,
                 routing: RoutingStrategy | str = "round_robin", **kwargs: Any) -> None:
        self.cluster = ClusterManager(tool_id, count, routing=routing, **kwargs).start()
        self._ids = itertools.count(1)
        self._futures: dict[str, concurrent.futures.Future[Turn]] = {}
        self._finished: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()

    def send_prompt(self, prompt: str, instance_id: str | None = None,
                    key: str | None = None) -> str:
        """Queue a prompt (on one instance, if named); returns a request id."""
        pool = self.cluster.pool
        future = (pool.submit(prompt, to=instance_id) if instance_id
                  else pool.submit(prompt, key=key))
        rid = f"req-{next(self._ids)}"
        with self._lock:
            self._futures[rid] = future
        future.add_done_callback(lambda _f: self._finished.put(rid))
        return rid

    def read_response(self, request_id: str | None = None,
                      timeout: float | None = None) -> Turn:
        """The turn of ``request_id``, or of whichever request finishes next."""
        if request_id is None:
            while True:
                try:
                    rid = self._finished.get(timeout=timeout)
                except queue.Empty:
                    raise TimeoutError("no response in time") from None
                with self._lock:
                    future = self._futures.pop(rid, None)
                if future is not None:
                    return future.result()
        with self._lock:
            future = self._futures.get(request_id)
        if future is None:
            raise KeyError(f"unknown or already read request id {request_id!r}")
        try:
            turn = future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"no response to {request_id} in time") from None
        with self._lock:
            self._futures.pop(request_id, None)
        return turn

    def get_status(self) -> list[dict[str, Any]]:
        return self.cluster.get_status()

    def check_health(self) -> dict[str, Any]:
        return self.cluster.pool.check_health()

    def restart_instance(self, instance_id: str) -> State:
        return self.cluster.restart(instance_id)

    def shutdown(self, timeout: float = 10.0) -> None:
        self.cluster.shutdown(timeout)

    def __enter__(self) -> ToolProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

