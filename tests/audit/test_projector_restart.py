"""The projector SIGKILLed mid-stream and restarted: rows equal records, no duplicates.

Records go to the real broker, the projector is a real `opsloop projector`
process writing to the suite's PostgreSQL; it is killed with SIGKILL (no cleanup,
no commit), more records arrive while it is down, and after a restart every
table's row count equals its topics' record count.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from streams.audit import store
from streams.devtools import childproc
from streams.kafka.producer import EventProducer
from tests.audit.records import decision, delivery, effect, event

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def produce(settings, start: int, count: int) -> dict[str, int]:
    async def run() -> None:
        async with EventProducer(settings, linger_ms=20) as producer:
            futures = []
            for i in range(start, start + count):
                session = f"acme:svc-{i % 17}"
                for topic, schema, record in (
                    ("events.telemetry", "opsloop.Event", event(i, session)),
                    ("decisions", "opsloop.Decision", decision(i, session)),
                    ("outbox", "opsloop.Effect", effect(i, session)),
                    ("deliveries", "opsloop.Delivery", delivery(i, session)),
                ):
                    futures.append(
                        await producer._producer.send(
                            producer.topic(topic), producer.codec.encode(schema, record), key=session.encode()
                        )
                    )
            await asyncio.gather(*futures)

    asyncio.run(run())
    return {"audit_events": count, "audit_decisions": count, "audit_effects": count, "audit_deliveries": count}


def start_projector(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    out = open(log, "ab")
    try:
        return childproc.spawn(
            [sys.executable, "-m", "streams.cli.main", "projector", "--batch-max", "200", *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    finally:
        out.close()


def wait_rows(engine: sa.Engine, predicate, timeout: float, log: Path) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    counts = {}
    while time.monotonic() < deadline:
        try:
            counts = store.count_rows(engine)
        except sa.exc.ProgrammingError:  # tables not migrated yet
            counts = {}
        if counts and predicate(counts):
            return counts
        time.sleep(0.05)
    raise AssertionError(f"rows {counts} after {timeout}s; projector log:\n{log.read_text()[-3000:]}")


def test_projector_killed_mid_stream_resumes_without_loss_or_duplicates(topics, opsloop_env, pg_audit_db, tmp_path):
    settings = topics
    url, engine = pg_audit_db
    env = {**opsloop_env, "DATABASE_URL": url}
    log = tmp_path / "projector.log"
    expected = produce(settings, 0, 3000)

    proc = start_projector(env, log)
    at_kill = wait_rows(engine, lambda c: sum(c.values()) > 0, 60, log)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = store.count_rows(engine)
    more = produce(settings, 3000, 1000)  # traffic goes on while the projector is down
    expected = {k: expected[k] + more[k] for k in expected}
    assert sum(at_kill.values()) < sum(expected.values()), "killed after everything was projected"

    proc = start_projector(env, log)
    try:
        final = wait_rows(engine, lambda c: c == expected, 90, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert final == expected
    with engine.connect() as conn:
        for table in ("audit_events", "audit_decisions", "audit_effects", "audit_deliveries"):
            distinct = conn.execute(
                sa.text(f'SELECT COUNT(*) FROM (SELECT DISTINCT topic, "partition", "offset" FROM {table}) s')
            ).scalar()
            assert distinct == final[table], f"{table}: two rows from one record"
    offsets = store.stored_offsets(engine)
    assert sum(o for (t, _), o in offsets.items() if t == "events.telemetry") == 4000
