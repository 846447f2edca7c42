"""Ingest's logging and HTTP server shell: the worker's masking and JSON logs, no request data echoed.

* :func:`configure_ingest_logging`: ``OPSLOOP_LOG_FORMAT=json`` / ``text`` and the
  secret-masking filter of :mod:`streams.logs` (every token, webhook secret and
  secret-named variable registered), plus :class:`MaskQueryValues` for values a
  client put in a URL (``?token=...``).
* :class:`PathOnlyAccessLogger`: method, path (never the query string), status,
  size, time, the producer-independent remote address.
* :class:`QuietHandler`: aiohttp answers a malformed or oversized request line or
  header itself, echoing the first 100 bytes of the offending header into the answer
  and the log; this answers ``{"error": "..."}`` without them and logs one line.
* :func:`serve`: the aiohttp runner with the parser limits (header size and count),
  automatic decompression off (ingest decompresses with a running limit), until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal

from aiohttp import web, web_protocol, web_server
from aiohttp.abc import AbstractAccessLogger

from streams.errors import cannot_listen
from streams.logs import configure, register_secrets
from streams.settings import IngestSettings, Settings

log = logging.getLogger("streams.ingest")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:token|access_token|key|secret|signature|sig|password)=)[^&\s\"']*")


class MaskQueryValues(logging.Filter):
    """``?token=abc`` → ``?token=**********`` in any log line, whatever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _QUERY_SECRET.sub(r"\1**********", message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def configure_ingest_logging(settings: Settings, level: str | None = None) -> None:
    configure(level or settings.log_level, settings.log_format)
    register_secrets(*settings.secret_values())
    for handler in logging.getLogger().handlers:
        handler.addFilter(MaskQueryValues())


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


class IngestRunner(web.AppRunner):
    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        server.__class__ = _QuietServer
        return server


def runner_for(app: web.Application, config: IngestSettings) -> IngestRunner:
    return IngestRunner(
        app,
        access_log_class=PathOnlyAccessLogger,
        access_log=logging.getLogger("aiohttp.access"),
        auto_decompress=False,
        max_line_size=config.max_header_bytes,
        max_field_size=config.max_header_bytes,
        max_headers=config.max_headers,
        keepalive_timeout=config.read_timeout_s,
    )


def serve(app: web.Application, config: IngestSettings) -> None:
    async def main() -> None:
        runner = runner_for(app, config)
        await runner.setup()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            try:
                await web.TCPSite(runner, config.host, config.port).start()
            except OSError as exc:
                raise cannot_listen(config.host, config.port, exc) from None
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
