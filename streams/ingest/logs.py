"""Ingest's logging and HTTP server shell: the worker's masking and JSON logs, no request data echoed.

* :func:`configure_ingest_logging`: ``OPSLOOP_LOG_FORMAT=json`` / ``text`` and the
  secret-masking filter of :mod:`streams.logs` (every token, webhook secret and
  secret-named variable registered), plus :class:`MaskQueryValues` for values a
  client put in a URL (``?token=...``).
* :func:`serve`: :mod:`streams.httpserve`'s server (a path-only access log, malformed or
  oversized request lines and headers answered without echoing them) with ingest's parser
  limits (header size and count), automatic decompression off (ingest decompresses with
  a running limit), until SIGTERM.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from aiohttp import web

from streams.httpserve import serve as http_serve
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


def serve(app: web.Application, config: IngestSettings, serving: Callable[[], None] | None = None) -> None:
    """Ingest's server: the parser limits of its settings, automatic decompression off (ingest decompresses
    with a running limit), idle connections closed after its read timeout."""
    http_serve(
        app,
        config.host,
        config.port,
        serving=serving,
        max_header_bytes=config.max_header_bytes,
        max_headers=config.max_headers,
        auto_decompress=False,
        keepalive_timeout=config.read_timeout_s,
    )
