"""Logs carry context ids, come as JSON when asked, and never show a secret."""

from __future__ import annotations

import json
import logging

import pytest

from streams.logs import MASK, JsonFormatter, RedactSecrets, register_secret_env, register_secrets
from streams.settings import Settings


def _emit(logger_name: str, formatter: logging.Formatter, fn) -> str:
    import io

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        fn(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_json_lines_lift_context_ids():
    out = _emit(
        "t.json",
        JsonFormatter(),
        lambda log: log.info("decided %s", "x", extra={"session_key": "acme:s1", "event_id": "e1"}),
    )
    line = json.loads(out)
    assert line["msg"] == "decided x" and line["session_key"] == "acme:s1" and line["event_id"] == "e1"
    assert line["level"] == "info" and line["ts"].endswith("Z")


def test_secrets_are_masked_in_messages_args_and_tracebacks(monkeypatch):
    monkeypatch.setenv("OPSLOOP_SLACK_INFRA_WEBHOOK", "https://hooks.example/T000/B000/XXXXsecretXXXX")
    monkeypatch.setenv("OPSLOOP_KAFKA_SASL_PASSWORD", "kafka-pass-123")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u:db-pass-456@h/db")
    register_secret_env()
    register_secrets(*Settings.from_env().secret_values())

    def noisy(log):
        log.warning("posting to %s failed", "https://hooks.example/T000/B000/XXXXsecretXXXX")
        log.info("connecting with kafka-pass-123 and postgresql+psycopg://u:db-pass-456@h/db")
        try:
            raise ConnectionError("auth failed for password db-pass-456")
        except ConnectionError:
            log.exception("db down")

    for formatter in (logging.Formatter("%(message)s"), JsonFormatter()):
        out = _emit("t.secrets", formatter, noisy)
        for secret in ("XXXXsecretXXXX", "kafka-pass-123", "db-pass-456"):
            assert secret not in out
        assert MASK in out and "ConnectionError" in out


# -- the Kafka clients' noise at INFO (QuietClients in logging_config) ------------------------


@pytest.fixture
def configured():
    """``logging_config(level)`` applied to this process, its console handler writing to a buffer."""
    import io
    import logging.config

    from streams.logs import logging_config

    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    saved_levels = {name: logging.getLogger(name).level for name in ("faust.assignor", "alembic.runtime.plugins")}

    def apply(level: str = "info", fmt: str = "text") -> io.StringIO:
        logging.config.dictConfig(logging_config(level, fmt))
        stream = io.StringIO()
        for handler in root.handlers:
            handler.setStream(stream)
        return stream

    yield apply
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)


def _coordinator_error() -> None:
    from aiokafka.errors import GroupCoordinatorNotAvailableError

    # what aiokafka's group coordinator logs while a fresh broker loads the group coordinator
    logging.getLogger("aiokafka.consumer.group_coordinator").error(
        "Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError
    )


def test_a_coordinator_retry_is_not_logged_as_an_error(configured):
    out = configured("info")
    _coordinator_error()
    text = out.getvalue()
    assert "GroupCoordinatorNotAvailableError" in text and "[INFO]" in text and "ERROR" not in text
    out = configured("warning")
    _coordinator_error()
    logging.getLogger("aiokafka.consumer.group_coordinator").error("Heartbeat failed: %r", "a real one")
    assert "GroupCoordinatorNotAvailableError" not in out.getvalue() and "[ERROR]" in out.getvalue()


def test_the_assigned_partitions_set_is_a_count_not_a_10_kb_line(configured):
    from aiokafka import TopicPartition

    out = configured("info")
    assigned = {TopicPartition(f"opsloop-topic-number-{t}", p) for t in range(8) for p in range(12)}
    logging.getLogger("aiokafka.consumer.group_coordinator").info(
        "Setting newly assigned partitions %s for group %s", assigned, "opsloop"
    )
    logging.getLogger("aiokafka.consumer.group_coordinator").info(
        "Revoking previously assigned partitions %s for group %s", frozenset(assigned), "opsloop"
    )
    set_, revoked = out.getvalue().splitlines()
    assert "96 partitions of 8 topics" in set_ and "group opsloop" in set_ and len(set_) < 300
    assert revoked.endswith("Revoking previously assigned partitions for group opsloop: 96 partitions of 8 topics")


def test_long_lines_are_cut_and_faust_tables_shrink_to_their_title(configured):
    from streams.logs import MAX_MESSAGE_CHARS

    out = configured("info", "json")
    logging.getLogger("faust.app").info("x" * 10_000)
    table = "\n".join(["+-----+-----+", "| topic | offset |", *[f"| t | {i} |" for i in range(96)], "+-----+"])
    logging.getLogger("faust.tables.recovery").info(
        "[^---Recovery]: Highwater for active changelog partitions:\n%s", table
    )
    first, second = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(first["msg"]) <= MAX_MESSAGE_CHARS + 50 and "8000 more characters cut" in first["msg"]
    assert (
        second["msg"]
        == "[^---Recovery]: Highwater for active changelog partitions: (a table of 96 rows; shown at DEBUG)"
    )
    out = configured("debug")
    logging.getLogger("faust.tables.recovery").info("Highwater:\n%s", table)
    assert out.getvalue().count("\n") >= 96  # in full at DEBUG


def test_a_value_with_control_characters_neither_forges_a_line_nor_makes_the_log_binary(configured):
    """Found from outside: an outbox record naming channel '\\x00' wrote a NUL into the worker's log (grep
    called it a binary file); a newline in such a value would have started a line of its own."""
    out = configured("info")
    forged = "slack\x00\n[2026-12-07 14:00:00,000] [1] [INFO] agents.sink: delivered everything"
    logging.getLogger("agents.sinks.dispatch").warning("dead-lettered outbox[0]@1 (sink:%s): %s", forged, "why")
    logging.getLogger("faust.tables.recovery").warning("Highwater:\n| t | 0 |\x07")  # a client's table keeps its lines
    own, *client = out.getvalue().splitlines()
    assert own.endswith(
        "(sink:slack\\x00\\n[2026-12-07 14:00:00,000] [1] [INFO] agents.sink: delivered everything): why"
    )
    assert client[0].endswith("faust.tables.recovery: Highwater:") and client[1:] == ["| t | 0 |\\x07"]
    assert "\x00" not in out.getvalue()


def test_a_cut_never_leaves_part_of_a_secret(configured):
    from streams.logs import MAX_MESSAGE_CHARS

    secret = "s3cr3t-" + "k" * 40
    register_secrets(secret)
    out = configured("info")
    logging.getLogger("aiokafka.conn").warning("%s%s tail", "a" * (MAX_MESSAGE_CHARS - 10), secret)
    assert "s3cr3t" not in out.getvalue() and "more characters cut" in out.getvalue()


def test_noisy_loggers_are_raised_to_warning_unless_debug(configured):
    configured("info")
    assert logging.getLogger("faust.assignor").level == logging.WARNING
    configured("debug")
    assert logging.getLogger("faust.assignor").level == logging.NOTSET


def test_a_clients_repeated_error_is_logged_once_a_window_with_its_count():
    """A broker down for 30 s made aiokafka log ~1,400 ERROR lines of four messages; now one per message per window."""
    from streams.logs import QuietClients

    now = [100.0]
    quiet = QuietClients(repeat_window_s=10.0, clock=lambda: now[0])

    def record(name: str, msg: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, msg, ("127.0.0.1", 9092), None)

    refused = "Unable connect to node with id 1: Connect call failed (%r, %d)"
    kept = []
    for step in range(30):  # 30 s, a record a second of each
        now[0] = 100.0 + step
        for name, msg in (("aiokafka", refused), ("aiokafka.consumer.fetcher", "Failed fetch from %s:%d")):
            r = record(name, msg)
            if quiet.filter(r):
                kept.append((now[0], r.getMessage()))
        r = record("agents.sink", "sink %s:%d failed")  # opsloop's own lines are never held back
        assert quiet.filter(r)
    assert len(kept) == 6  # each message at 100, 110 and 120
    assert [t for t, _ in kept] == [100.0, 100.0, 110.0, 110.0, 120.0, 120.0]
    assert kept[2][1].endswith("(and 9 more like it in the 10 s before)")
    assert kept[0][1] == "Unable connect to node with id 1: Connect call failed ('127.0.0.1', 9092)"
    # a different message, or INFO, is not a repeat
    assert quiet.filter(record("aiokafka", "Unable connect to node with id 2: (%r, %d)"))
    assert all(quiet.filter(record("aiokafka", refused, logging.INFO)) for _ in range(3))
