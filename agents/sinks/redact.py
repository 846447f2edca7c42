"""Secret values out of every log line and error message.

Secrets are resolved only at delivery time, but an exception text, a library's
debug line (httpx logs each request URL at INFO, and a Slack webhook URL *is* the
secret) or a service's error echo can still carry one. Every value the sinks
resolve is registered here; :func:`install` wraps the logging record factory once,
so every record from every logger is redacted before any handler sees it, and
:meth:`Redactor.redact` cleans the error strings that go into records.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Iterable
from urllib.parse import urlsplit

MASK = "[REDACTED]"
MIN_LENGTH = 4  # shorter values would mask random substrings and leak nothing useful


class Redactor:
    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self._pattern is not None

    def add(self, values: Iterable[str]) -> None:
        fresh = set()
        for value in values:
            if not value or len(value) < MIN_LENGTH:
                continue
            fresh.add(value)
            if value.startswith(("http://", "https://")):
                path = urlsplit(value).path  # a re-encoded URL in a log line still has its token path
                if len(path) >= 8:
                    fresh.add(path)
        with self._lock:
            if fresh <= self._values:
                return
            self._values |= fresh
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)


REDACTOR = Redactor()
_installed = False


def install(redactor: Redactor = REDACTOR) -> None:
    """Redact every log record of this process (idempotent)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if redactor.active:
            _redact_record(record, redactor)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


def _redact_record(record: logging.LogRecord, redactor: Redactor) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: leave it to the handler to report
        return
    clean = redactor.redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None:
        import traceback

        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_text = redactor.redact(text)
        record.exc_info = None
