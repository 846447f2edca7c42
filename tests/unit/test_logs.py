"""Logs carry context ids, come as JSON when asked, and never show a secret."""

from __future__ import annotations

import json
import logging

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
