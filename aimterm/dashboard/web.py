"""``aimterm dashboard --web``: the same dashboard served to browsers by textual-serve.

Each browser tab that connects gets its own dashboard process (textual-serve runs the
command per websocket), so every tab follows the daemon live by itself. The server binds
127.0.0.1 only, and every route lives under a random token in the path
(``/TOKEN/``, ``/TOKEN/ws``, ``/TOKEN/static/…``): a request without it gets 403 and no page.
The token is in the path rather than a cookie because cookies are shared by every port of
127.0.0.1, so another local server could read a cookie; a path is sent only here.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import re
import secrets
import shlex
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web
from textual_serve.app_service import AppService
from textual_serve.server import Server, to_int

__all__ = ["serve_dashboard"]

HOST = "127.0.0.1"
_STOP_GRACE_S = 3.0


class _TrackedAppService(AppService):
    """An app service whose process the server can find again, to stop it at shutdown."""

    def __init__(self, processes: set[asyncio.subprocess.Process], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._processes = processes

    async def _open_app_process(self, width: int = 80,
                                height: int = 24) -> asyncio.subprocess.Process:
        process = await super()._open_app_process(width, height)
        self._processes.add(process)
        return process


class _TokenServer(Server):
    """textual-serve's server with every route under ``/{token}/``."""

    def __init__(self, command: list[str], token: str) -> None:
        # exec: the shell textual-serve starts becomes the dashboard, so the process it
        # tracks is the dashboard itself (no shell left behind when it is stopped).
        super().__init__("exec " + shlex.join(command), host=HOST, port=0,
                         title="aimterm dashboard")
        self.token = token
        self.processes: set[asyncio.subprocess.Process] = set()

    def _page(self) -> str:
        text = (Path(self.templates_path) / "app_index.html").read_text()
        # The page would fetch a font from Google: nothing leaves the machine.
        text = re.sub(r'<link\s[^>]*fonts\.googleapis\.com[^>]*/>', "", text)
        base = f"{self.public_url}/{self.token}"
        # The template's few {{ }} fields, filled in here (the rest, e.g. ping_url, empty).
        fields = {"config.static.url": f"{base}/static/",
                  "app_websocket_url": "ws:" + base.split(":", 1)[1] + "/ws",
                  "font_size": "16", "application.name or 'Textual Application'": self.title}
        return re.sub(r"\{\{\s*(.*?)\s*\}\}",
                      lambda m: html.escape(fields.get(m.group(1), "")), text)

    async def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.add_routes([
            web.get("/{token}/", self.handle_index),
            web.get("/{token}/ws", self.handle_websocket),
            web.get("/{token}/static/{path:.+}", self._handle_static),
        ])
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every request, found or not, must carry the token as its first path segment."""
        given = request.path.lstrip("/").split("/", 1)[0]
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise web.HTTPForbidden(text="aimterm dashboard: no valid token in the address\n")
        response: web.StreamResponse = await handler(request)
        return response

    async def _handle_static(self, request: web.Request) -> web.FileResponse:
        root = Path(self.statics_path).resolve()
        path = (root / request.match_info["path"]).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def handle_index(self, request: web.Request) -> web.Response:
        return web.Response(text=self._page(), content_type="text/html")

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        """textual-serve's handler, with the app service that is tracked."""
        websocket = web.WebSocketResponse(heartbeat=15)
        width = to_int(request.query.get("width", ""), 80)
        height = to_int(request.query.get("height", ""), 24)
        service: _TrackedAppService | None = None
        try:
            await websocket.prepare(request)
            service = _TrackedAppService(
                self.processes, command=self.command, write_bytes=websocket.send_bytes,
                write_str=websocket.send_str, close=websocket.close,
                download_manager=self.download_manager)
            await service.start(width, height)
            await self._process_messages(websocket, service)
        except asyncio.CancelledError:
            await websocket.close()
        finally:
            if service is not None:
                await service.stop()
        return websocket

    async def stop_apps(self) -> None:
        """Stop every dashboard process still running: politely, then for good."""
        running = [p for p in self.processes if p.returncode is None]
        for process in running:
            process.terminate()
        for process in running:
            try:
                await asyncio.wait_for(process.wait(), _STOP_GRACE_S)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()


async def _serve(command: list[str], port: int, out: TextIO) -> None:
    server = _TokenServer(command, secrets.token_urlsafe(24))
    runner = web.AppRunner(await server._make_app(), handle_signals=False,
                           shutdown_timeout=_STOP_GRACE_S, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, HOST, port)
        await site.start()
        bound = runner.addresses[0][1]
        # The page builds its websocket and static addresses from this.
        server.public_url = f"http://{HOST}:{bound}"
        print(f"aimterm dashboard: {server.public_url}/{server.token}/", file=out, flush=True)
        await stop.wait()
    finally:
        await server.stop_apps()
        await runner.cleanup()
        await server.stop_apps()  # one a tab opened while the server was stopping


def serve_dashboard(command: list[str], *, port: int = 0, out: TextIO = sys.stdout) -> int:
    """Serve the dashboard (``command``, run once per browser tab) on 127.0.0.1:``port``
    (0: a free port) until SIGINT or SIGTERM; prints the address with its token first.
    Returns 0."""
    asyncio.run(_serve(command, port, out))
    return 0
