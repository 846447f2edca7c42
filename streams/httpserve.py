"""The HTTP server shell every opsloop web process runs (ingest, the read API, the console).

aiohttp answers a malformed or oversized request line or header itself, echoing the first
100 bytes of the offending header into the answer and its log: for an ``Authorization:
Bearer <token>`` or a ``Cookie`` over the size limit, part of a credential went back to
whoever sent it and into the log (seen on the read API and the console). Here such a
request is answered ``{"error": "..."}`` without them and logged in one line; the access log
names the path, never the query string; and the process logs that it serves only once it
does (a port in use is the one line of :func:`streams.errors.cannot_listen`, exit code 4).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web, web_protocol, web_server
from aiohttp.abc import AbstractAccessLogger

from streams.errors import cannot_listen

log = logging.getLogger("streams.http")

# aiohttp's defaults for the request line and a header, and a bound on the header count
MAX_HEADER_BYTES = 8190
MAX_HEADERS = 64


class PathOnlyAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %d %d %.3fs',
            request.remote,
            request.method,
            request.path[:200],
            response.status,
            response.body_length,
            time,
        )


class QuietHandler(web_protocol.RequestHandler):
    def handle_error(self, request, status=500, exc=None, message=None):  # type: ignore[no-untyped-def]
        if status >= 500:
            return super().handle_error(request, status, None, None)
        log.info(
            "refused a malformed request from %s: %d %s", request.remote, status, type(exc).__name__ if exc else ""
        )
        reason = "malformed request line or header, or a header over the size / count limit"
        response = web.Response(status=status, text=json.dumps({"error": reason}), content_type="application/json")
        response.force_close()
        return response


class _QuietServer(web_server.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return QuietHandler(self, loop=self._loop, **self._kwargs)


class QuietRunner(web.AppRunner):
    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        server.__class__ = _QuietServer
        return server


def runner_for(
    app: web.Application,
    *,
    max_header_bytes: int = MAX_HEADER_BYTES,
    max_headers: int = MAX_HEADERS,
    **options: Any,
) -> QuietRunner:
    return QuietRunner(
        app,
        access_log_class=PathOnlyAccessLogger,
        access_log=logging.getLogger("aiohttp.access"),
        max_line_size=max_header_bytes,
        max_field_size=max_header_bytes,
        max_headers=max_headers,
        **options,
    )


def serve(
    app: web.Application, host: str, port: int, *, serving: Callable[[], None] | None = None, **options: Any
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT; ``serving`` runs once the port listens (to log that it does)."""

    async def main() -> None:
        runner = runner_for(app, **options)
        await runner.setup()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            try:
                await web.TCPSite(runner, host, port).start()
            except OSError as exc:
                raise cannot_listen(host, port, exc) from None
            if serving is not None:
                serving()
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
