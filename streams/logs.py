"""Logging setup: text or JSON lines, with session and event ids, and secrets masked.

Log calls pass ids as ``extra={"session_key": ..., "event_id": ...}`` (never
formatted into the message eagerly); the JSON formatter lifts them into fields so
logs can be joined with the audit trail. :class:`RedactSecrets` is installed on
every handler and replaces any registered secret value that reaches a log line,
whatever path it took (an exception from a client library, a URL in an error).
:class:`QuietClients` (after it) keeps the Kafka clients' known noise out of an INFO
log: the group-coordinator retries aiokafka logs as ERROR while a broker loads its
coordinator become INFO, its one-line sets of every assigned and revoked partition become a
count, faust's ASCII tables of partitions and offsets shrink to their title line
(in full at DEBUG), a warning or error the clients repeat word for word is logged once per
:data:`REPEAT_WINDOW_S` with how often it came (a broker down for 30 s made aiokafka log
~1,400 ERROR lines, ~45 a second, of four messages), no message is longer than
:data:`MAX_MESSAGE_CHARS`, and control characters in a message are escaped (``\x00``, and in
opsloop's own messages ``\n`` too: a value from a record or a request, such as a receiver name,
can neither forge a log line nor make the log a binary file).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

MASK = "**********"
CONTEXT_FIELDS = ("session_key", "event_id", "effect_id", "topic", "partition", "offset", "channel", "receiver")
# Environment variables whose values are secrets even if nothing registered them.
SECRET_ENV = re.compile(r"(PASSWORD|TOKEN|SECRET|WEBHOOK|ROUTING_KEY|API_KEY|DATABASE_URL)", re.I)
MIN_SECRET_LEN = 6  # shorter values would mask ordinary words
# Longer messages are cut (after secrets are masked, so no secret is cut in half unmasked).
MAX_MESSAGE_CHARS = 2000
# aiokafka logs these as ERROR while the broker elects or loads the group coordinator
# (every start on a fresh broker), then retries and succeeds: transient, not an error.
TRANSIENT_COORDINATOR_ERRORS = (
    "GroupCoordinatorNotAvailableError",
    "NotCoordinatorForGroupError",
    "CoordinatorLoadInProgressError",
)
# A client's warning or error repeated word for word within this many seconds is counted, not logged again.
REPEAT_WINDOW_S = 10.0
REPEAT_KEYS_MAX = 1024  # distinct repeated messages remembered (then forgotten all at once)
# Control characters escaped in every message (tab and newline kept: the clients' multi-line tables at DEBUG),
# and in the messages of opsloop's own loggers, which are one line each, newlines too.
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
OWN_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
OWN_LOGGERS = ("agents", "streams", "classifier", "opsloop")
# Loggers whose INFO records are noise in an opsloop log (raised to WARNING unless the level is DEBUG).
QUIET_LOGGERS = ("faust.assignor", "alembic.runtime.plugins")


class _Secrets:
    def __init__(self) -> None:
        self.values: set[str] = set()
        self.pattern: re.Pattern[str] | None = None

    def add(self, values: Iterable[str]) -> None:
        fresh = {v for v in values if v and len(v) >= MIN_SECRET_LEN} - self.values
        if fresh:
            self.values |= fresh
            ordered = sorted(self.values, key=len, reverse=True)
            self.pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def mask(self, text: str) -> str:
        return self.pattern.sub(MASK, text) if self.pattern is not None else text


SECRETS = _Secrets()


def register_secrets(*values: str) -> None:
    """Mask these values in every log line from now on."""
    SECRETS.add(values)


def register_secret_env(environ: dict[str, str] | None = None) -> None:
    """Mask the values of environment variables whose names say they are secrets."""
    env = os.environ if environ is None else environ
    SECRETS.add(value for name, value in env.items() if SECRET_ENV.search(name))


class RedactSecrets(logging.Filter):
    """Render the record once, mask secrets in the text and the traceback, keep it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if SECRETS.pattern is None:
            return True
        message = record.getMessage()
        masked = SECRETS.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = SECRETS.mask(record.exc_text)
        return True


class QuietClients(logging.Filter):
    """Known noise from aiokafka and faust made readable at INFO (see the module doc); install after redaction."""

    def __init__(
        self,
        max_chars: int = MAX_MESSAGE_CHARS,
        repeat_window_s: float = REPEAT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.max_chars = max_chars
        self.repeat_window_s, self._clock = repeat_window_s, clock
        self._repeats: dict[tuple[str, int, str], list[float]] = {}  # message -> [window start, repeats held back]

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name.startswith("aiokafka"):
            if record.levelno > logging.INFO:
                message = record.getMessage()
                if any(error in message for error in TRANSIENT_COORDINATOR_ERRORS):
                    if not logging.getLogger().isEnabledFor(logging.INFO):
                        return False  # demoted below the process's level
                    record.levelno, record.levelname = logging.INFO, "INFO"
                    record.msg, record.args = f"{message} (transient while the coordinator loads; retrying)", None
            elif name == "aiokafka.consumer.group_coordinator" and str(record.msg).startswith(
                ("Setting newly assigned partitions", "Revoking previously assigned partitions")
            ):
                self._count_partitions(record)
        elif name.startswith("faust") and not logging.getLogger().isEnabledFor(logging.DEBUG):
            message = record.getMessage()
            if "\n+-" in message:  # an ASCII table (terminaltables) of partitions, offsets, highwaters
                title, _, table = message.partition("\n")
                rows = sum(1 for line in table.splitlines() if line.startswith("|")) - 1
                record.msg, record.args = f"{title} (a table of {max(rows, 0)} rows; shown at DEBUG)", None
        message = record.getMessage()
        if record.levelno >= logging.WARNING and name.startswith(("aiokafka", "faust")):
            if self._repeated(record, name, message):
                return False
            message = record.getMessage()
        control = OWN_CONTROL_CHARS if name.startswith(OWN_LOGGERS) else CONTROL_CHARS
        if control.search(message):
            message = control.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), message)
            record.msg, record.args = message, None
        if len(message) > self.max_chars:
            cut = len(message) - self.max_chars
            record.msg, record.args = f"{message[: self.max_chars]}... ({cut} more characters cut)", None
        return True

    def _repeated(self, record: logging.LogRecord, name: str, message: str) -> bool:
        """True to hold this record back as a repeat; the first after a window says how many were held."""
        key, now = (name, record.levelno, message), self._clock()
        seen = self._repeats.get(key)
        if seen is not None and now - seen[0] < self.repeat_window_s:
            seen[1] += 1
            return True
        if seen is not None and seen[1]:
            record.msg, record.args = (
                f"{message} (and {int(seen[1])} more like it in the {now - seen[0]:.0f} s before)",
                None,
            )
        if len(self._repeats) >= REPEAT_KEYS_MAX:
            self._repeats.clear()
        self._repeats[key] = [now, 0]
        return False

    @staticmethod
    def _count_partitions(record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        assigned = args[0] if args else None
        if isinstance(assigned, (set, frozenset, list, tuple)):
            topics = {getattr(tp, "topic", tp) for tp in assigned}
            group = args[1] if len(args) > 1 else "?"
            verb = "Revoking previously" if str(record.msg).startswith("Revoking") else "Setting newly"
            record.msg = verb + " assigned partitions for group %s: %d partitions of %d topics"
            record.args = (group, len(assigned), len(topics))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context ids, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                out[field] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str)


def logging_config(level: str = "info", fmt: str = "text") -> dict[str, Any]:
    """A dictConfig for the process (faust's Worker accepts it as ``logging_config``)."""
    formatter = (
        {"()": JsonFormatter}
        if fmt == "json"
        else {"format": "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"}
    )
    quiet = {name: {"level": "NOTSET" if level.upper() == "DEBUG" else "WARNING"} for name in QUIET_LOGGERS}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactSecrets}, "quiet": {"()": QuietClients}},
        "formatters": {"default": formatter},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "default", "filters": ["redact", "quiet"]}
        },
        "loggers": quiet,
        "root": {"level": level.upper(), "handlers": ["console"]},
    }


def configure(level: str = "info", fmt: str = "text") -> None:
    """Set up logging for a process that is not a faust worker (ingest, CLI commands)."""
    import logging.config

    register_secret_env()
    logging.config.dictConfig(logging_config(level, fmt))
