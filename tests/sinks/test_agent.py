"""The sink agent in a real worker process on the real broker.

Effects are put on ``outbox``; the worker delivers them to the local receivers,
writes receipts to ``deliveries`` and what cannot be delivered to ``outbox.dlq``.
The kill test SIGKILLs a worker after it sent but before it committed an offset
and counts what the receivers got after the restart.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from streams.kafka.compat import refresh_metadata
from streams.kafka.producer import EventProducer
from streams.kafka.reader import TopicReader
from tests.sinks.conftest import SECRETS
from tests.sinks.fakes import FakeServices
from tests.sinks.helpers import make_effect

pytestmark = pytest.mark.integration


def routing_file(tmp_path: Path, fakes: FakeServices) -> tuple[Path, dict[str, str]]:
    path = tmp_path / "routing.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        receivers:
          - name: slack-a
            channel: slack
            settings: {{mention_groups: [S0123ABC]}}
            secrets: {{webhook_url: OPSLOOP_E2E_SLACK_A}}
            rate_limit: none
          - name: slack-b
            channel: slack
            secrets: {{webhook_url: OPSLOOP_E2E_SLACK_B}}
            rate_limit: none
          - name: teams
            channel: teams
            secrets: {{webhook_url: OPSLOOP_E2E_TEAMS}}
          - name: pd
            channel: pagerduty
            settings: {{url: "{fakes.url("pagerduty", "pd")}"}}
            secrets: {{routing_key: OPSLOOP_E2E_PD_KEY}}
            rate_limit: none
          - name: pd-badkey
            channel: pagerduty
            settings: {{url: "{fakes.url("pagerduty", "pd-badkey")}"}}
            secrets: {{routing_key: OPSLOOP_E2E_PD_BADKEY}}
          - name: hooks
            channel: webhook
            settings: {{url: "{fakes.url("hook", "hooks")}"}}
            secrets: {{signing_key: OPSLOOP_E2E_HOOK_KEY}}
            rate_limit: none
        """)
    )
    env = {
        "OPSLOOP_SINK_RECEIVERS_FILE": str(path),
        "OPSLOOP_E2E_SLACK_A": fakes.url("slack", "slack-a"),
        "OPSLOOP_E2E_SLACK_B": fakes.url("slack", "slack-b"),
        "OPSLOOP_E2E_TEAMS": fakes.url("teams", "teams"),
        "OPSLOOP_E2E_PD_KEY": SECRETS["OPSLOOP_TEST_PD_KEY"],
        "OPSLOOP_E2E_PD_BADKEY": "SECRET-bad-routing-key-0000",  # not 32 characters: PagerDuty answers 400
        "OPSLOOP_E2E_HOOK_KEY": SECRETS["OPSLOOP_TEST_HOOK_KEY"],
        "OPSLOOP_SINK_BACKOFF_BASE_S": "0.05",
        "OPSLOOP_SINK_READ_TIMEOUT_S": "2",
    }
    return path, env


async def put(settings, effects, raw: list[bytes] = ()) -> None:
    async with EventProducer(settings) as producer:
        for effect in effects:
            await producer.send_record("outbox", effect["session_key"], "opsloop.Effect", effect)
        for value in raw:
            await producer.send_raw("outbox", b"poison", value)


async def read(settings, until, timeout: float = 60.0):
    async with TopicReader(settings, ["deliveries", "outbox.dlq"]) as reader:
        return await reader.collect(until, timeout=timeout)


def test_worker_delivers_outbox_with_receipts_and_dead_letters(
    app_topics, worker_factory, fakes: FakeServices, tmp_path: Path
) -> None:
    settings = app_topics
    _, env = routing_file(tmp_path, fakes)
    tag = uuid.uuid4().hex[:6]
    effects = [
        make_effect("slack-a", "slack", title=f"e2e {tag} slack", session_key=f"s-{tag}-1"),
        make_effect("teams", "teams", title=f"e2e {tag} teams", session_key=f"s-{tag}-2"),
        make_effect("pd", "pagerduty", title=f"e2e {tag} pd", session_key=f"s-{tag}-3"),
        make_effect("hooks", "webhook", title=f"e2e {tag} hook", session_key=f"s-{tag}-4"),
        make_effect("log", "log", title=f"e2e {tag} log", session_key=f"s-{tag}-5"),
        make_effect("pd-badkey", "pagerduty", title=f"e2e {tag} bad", session_key=f"s-{tag}-6"),
    ]
    timer = {
        **make_effect("log", "log", session_key=f"s-{tag}-7"),
        "type": "schedule_timer",
        "notify": None,
        "timer": {"timer_id": "t1", "fire_at": 1, "purpose": "escalate", "step": 1, "data": {}},
    }
    before = {kind: len(fakes.got(kind)) for kind in ("slack", "teams", "pagerduty", "hook")}
    worker = worker_factory(**env)
    asyncio.run(put(settings, [*effects, timer], raw=[b"\x00not avro at all"]))

    def done(records) -> bool:
        receipts = [r for r in records if r.topic == "deliveries"]
        return len(receipts) >= len(effects) and len([r for r in records if r.topic == "outbox.dlq"]) >= 2

    records = asyncio.run(read(settings, done))
    receipts = {r.value["effect_id"]: r.value for r in records if r.topic == "deliveries"}
    letters = [r.value for r in records if r.topic == "outbox.dlq"]
    assert {e["effect_id"]: receipts[e["effect_id"]]["status"] for e in effects} == {
        **{e["effect_id"]: "delivered" for e in effects[:5]},
        effects[5]["effect_id"]: "dead",
    }
    assert timer["effect_id"] not in receipts  # timers are not the sinks' business
    assert all(r.key == r.value["effect_id"].encode() for r in records if r.topic == "deliveries")
    by_stage = {d["stage"]: d for d in letters}
    assert set(by_stage) == {"sink", "sink:pagerduty"}
    assert "undecodable" in by_stage["sink"]["reason"] and by_stage["sink"]["value"] == b"\x00not avro at all"
    assert "400" in by_stage["sink:pagerduty"]["reason"] and by_stage["sink:pagerduty"]["source_topic"].endswith(
        "outbox"
    )
    after = {kind: len(fakes.got(kind)) - before[kind] for kind in before}
    assert after == {"slack": 1, "teams": 1, "pagerduty": 2, "hook": 1}
    assert all(
        r.errors == [] for r in fakes.requests if tag in r.body.decode(errors="replace") and r.name != "pd-badkey"
    )
    # Every record was acked in order and committed (manual acks reach faust's consumer).
    deadline = time.monotonic() + 20
    while asyncio.run(committed_offsets(settings)) < len(effects) + 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert asyncio.run(committed_offsets(settings)) == len(effects) + 2
    worker.stop()
    logged = worker.log()
    assert f"e2e {tag} log" in logged  # the log channel wrote it
    for secret in (
        env["OPSLOOP_E2E_SLACK_A"],
        env["OPSLOOP_E2E_PD_KEY"],
        env["OPSLOOP_E2E_PD_BADKEY"],
        env["OPSLOOP_E2E_HOOK_KEY"],
    ):
        assert secret not in logged


@pytest.fixture
def pg_ledger_url(postgres_url: str) -> str:
    schema = f"ledger_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    sep = "&" if "?" in postgres_url else "?"
    return f"{postgres_url}{sep}options=-csearch_path%3D{schema}"


async def committed_offsets(settings) -> int:
    """Sum of the committed outbox offsets of the workers' group (0: nothing committed)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**settings.kafka_client_config(), group_id=settings.app_id, enable_auto_commit=False)
    await consumer.start()
    try:
        topic = settings.topic_prefix + "outbox"
        total = 0
        for p in consumer.partitions_for_topic(topic) or await _partitions(consumer, topic):
            total += (await consumer.committed(TopicPartition(topic, p))) or 0
        return total
    finally:
        await consumer.stop()


async def _partitions(consumer, topic):
    await refresh_metadata(consumer)
    return consumer.partitions_for_topic(topic) or set()


def test_killed_after_sending_before_committing_the_ledger_prevents_a_second_send(
    app_topics,
    worker_factory,
    fakes: FakeServices,
    tmp_path: Path,
    pg_ledger_url: str,
) -> None:
    settings = app_topics
    _, env = routing_file(tmp_path, fakes)
    env["OPSLOOP_SINK_DATABASE_URL"] = pg_ledger_url
    tag = uuid.uuid4().hex[:6]
    effects = [
        make_effect(r, c, title=f"kill {tag} {i}", session_key=f"k-{tag}-{i}")
        for i, (r, c) in enumerate([("slack-b", "slack"), ("pd", "pagerduty"), ("hooks", "webhook")] * 3)
    ]
    ids = {e["effect_id"] for e in effects}

    def sent() -> int:
        return sum(1 for r in fakes.requests if f"kill {tag}" in r.body.decode(errors="replace"))

    first = worker_factory(**env, OPSLOOP_COMMIT_INTERVAL_S="3600")  # it will never get to commit
    asyncio.run(put(settings, effects))
    receipts = asyncio.run(
        read(settings, lambda rs: ids <= {r.value["effect_id"] for r in rs if r.topic == "deliveries"})
    )
    assert {r.value["status"] for r in receipts if r.topic == "deliveries"} == {"delivered"}
    assert sent() == len(effects)
    first.kill()
    assert asyncio.run(committed_offsets(settings)) == 0, "the offsets were committed: the test would prove nothing"

    worker_factory(**env)
    records = asyncio.run(
        read(
            settings,
            lambda rs: (
                sum(
                    1
                    for r in rs
                    if r.topic == "deliveries" and r.value["status"] == "skipped" and r.value["effect_id"] in ids
                )
                >= len(effects)
            ),
            timeout=90,
        )
    )
    skipped = [r.value for r in records if r.topic == "deliveries" and r.value["status"] == "skipped"]
    assert {s["effect_id"] for s in skipped} == ids and all("already delivered" in s["error"] for s in skipped)
    assert sent() == len(effects), "a redelivered effect was sent a second time"
    engine = sa.create_engine(pg_ledger_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT status, claims FROM delivery_ledger")).all()
    engine.dispose()
    assert sorted(rows) == [("delivered", 1)] * len(effects)


def test_a_worker_started_before_its_ledger_database_waits_for_it_then_delivers_once(
    app_topics, worker_factory, fakes: FakeServices, tmp_path: Path
) -> None:
    """The sinks agent used to crash at start with the ledger's database down, and faust restarted it every
    5 s with a 120-line traceback each time. It waits now, one warning per try, and delivers once it is up."""
    from tests.support.postgres import LocalPostgres

    settings = app_topics
    _, env = routing_file(tmp_path, fakes)
    pg = LocalPostgres().start()
    try:
        pg.pause()  # the cluster exists; its port refuses connections, as a database still starting does
        worker = worker_factory(**env, OPSLOOP_SINK_DATABASE_URL=pg.url, OPSLOOP_SINK_SINGLE_NODE="false")
        tag = uuid.uuid4().hex[:6]
        effect = make_effect("slack-a", "slack", title=f"ledger {tag}", session_key=f"s-{tag}")
        asyncio.run(put(settings, [effect]))
        waiting = "the delivery ledger's database is unavailable (OperationalError: connection failed"
        deadline = time.monotonic() + 60
        while waiting not in worker.log() and time.monotonic() < deadline:
            assert worker.alive, worker.log()[-4000:]
            time.sleep(0.2)
        assert waiting in worker.log(), worker.log()[-4000:]
        assert not [r for r in fakes.requests if tag in r.body.decode(errors="replace")]  # nothing sent unrecorded
        pg.resume()
        records = asyncio.run(read(settings, lambda rs: any(r.topic == "deliveries" for r in rs)))
        assert [(r.value["effect_id"], r.value["status"]) for r in records if r.topic == "deliveries"] == [
            (effect["effect_id"], "delivered")
        ]
        assert len([r for r in fakes.requests if tag in r.body.decode(errors="replace")]) == 1
        log = worker.log()
        assert "Traceback" not in log and "Crashed" not in log, log[-4000:]
        assert worker.alive
    finally:
        pg.stop()
