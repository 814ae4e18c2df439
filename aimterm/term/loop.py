"""The one reader loop: an asyncio event loop in one daemon thread, shared by every PTY.

Every PTY master and every child's pidfd is registered here, so a process with a hundred
instances has one thread blocked in ``epoll`` instead of a hundred reader threads. Callers in
other threads hand work to the loop with :meth:`IOLoop.call_soon` or run it there and wait with
:meth:`IOLoop.run_sync`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_shared: IOLoop | None = None


class IOLoop:
    def __init__(self, name: str = "aimterm-io") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        self._ident = self._thread.ident  # in_loop() is on every hot path: compare idents

    @classmethod
    def shared(cls) -> IOLoop:
        """The process-wide loop, started on first use."""
        global _shared
        with _lock:
            if _shared is None or not _shared.is_running():
                _shared = cls()
            return _shared

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def is_running(self) -> bool:
        return self._thread.is_alive()

    def in_loop(self) -> bool:
        return threading.get_ident() == self._ident

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.in_loop():
            self.loop.call_soon(fn, *args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> asyncio.TimerHandle:
        """Schedule ``fn`` on the loop; must be called from the loop thread."""
        return self.loop.call_later(delay, fn, *args)

    def run_sync(self, fn: Callable[..., T], *args: Any, timeout: float | None = 10.0) -> T:
        """Run ``fn`` on the loop thread and return its result (directly if already there)."""
        if self.in_loop():
            return fn(*args)
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def _call() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(_call)
        return fut.result(timeout)

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self.run_sync(self.loop.add_reader, fd, callback)

    def remove_reader(self, fd: int) -> None:
        self.run_sync(self.loop.remove_reader, fd)

    def stop(self) -> None:
        if self.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
