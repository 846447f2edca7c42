"""A storm to a slow destination: past its backlog, effects spill to the ledger instead of being dead-lettered."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiohttp import web
from prometheus_client import REGISTRY

from agents.sinks.ledger import SPILLED
from streams.db import make_engine
from streams.model.receivers import Receiver
from tests.sinks.conftest import receivers_for
from tests.sinks.fakes import Answer, FakeServices
from tests.sinks.helpers import FAST, Harness, make_effect
from tests.sinks.test_agent import committed_offsets, pg_ledger_url, put, read, routing_file  # noqa: F401 - a fixture


class GatedReceiver:
    """A Slack-like webhook that holds every request until released, and keeps the titles in arrival order."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.titles: list[str] = []
        self.waiting = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.waiting += 1
        await self.gate.wait()
        self.waiting -= 1
        self.titles.append(payload["text"].removeprefix("[URGENT] "))
        return web.Response(text="ok")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[GatedReceiver]:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # noqa: SLF001
        try:
            yield self
        finally:
            self.gate.set()
            await runner.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path):
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path}/ledger.db")
        yield eng
        eng.dispose()
    else:
        yield request.getfixturevalue("pg_engine")


def test_a_slow_destination_spills_past_its_backlog_and_delivers_everything_in_order_once_released(
    fakes: FakeServices, engine
) -> None:
    receivers, env = receivers_for(fakes)
    sessions, per_session, backlog = 4, 8, 3
    fast_before = len(fakes.got("slack", "slack-a"))

    async def run() -> None:
        async with GatedReceiver().running() as slow:
            env["OPSLOOP_TEST_SLOW_URL"] = slow.url
            all_receivers = {
                **receivers,
                "slow": Receiver("slow", "slack", {}, {"webhook_url": "OPSLOOP_TEST_SLOW_URL"}),
            }
            # A read timeout past the test: the held requests are slow, not lost.
            policy = replace(FAST, read_timeout_s=60.0, max_total_s=120.0)
            async with Harness(all_receivers, engine, env, policy=policy, backlog_per_destination=backlog) as h:
                effects = [
                    make_effect("slow", "slack", title=f"slow s{s} #{i}", session_key=f"spill-s{s}")
                    for i in range(per_session)
                    for s in range(sessions)
                ]
                counted = REGISTRY.get_sample_value("opsloop_sink_spilled_total", {"receiver": "slow"}) or 0.0
                slow_done = [await h.submit(e) for e in effects]
                # The other destination meanwhile: delivered at once, though "slow" holds everything.
                fast = [make_effect("slack-a", "slack", title=f"fast {i}", session_key=f"fast-{i}") for i in range(5)]
                for e in fast:
                    assert await asyncio.wait_for(await h.submit(e), 10) == "delivered"
                spilled = [f for f in slow_done if f.done()]
                assert len(spilled) >= len(effects) - backlog  # settled (offset committable) once in the ledger
                assert {f.result() for f in spilled} == {"spilled"}
                assert slow.waiting == 1 and slow.titles == []
                rows = [r for r in h.ledger.rows() if r.receiver == "slow"]
                assert sum(r.status == SPILLED for r in rows) >= len(effects) - backlog - 1

                slow.gate.set()
                await h.until(lambda _h: len(slow.titles) >= len(effects), 30, "every spilled effect delivered")
                await h.until(lambda _h: not h.dispatcher._workers["slow"].spilling, 10, "the spill mode ended")  # noqa: SLF001
                await asyncio.sleep(0.2)  # nothing more may come: a second send would show up here
                assert sorted(slow.titles) == sorted(e["notify"]["title"] for e in effects)  # each exactly once
                for s in range(sessions):  # each session in order
                    got = [t for t in slow.titles if t.startswith(f"slow s{s} ")]
                    assert got == [f"slow s{s} #{i}" for i in range(per_session)], got
                assert h.emitter.dead == []
                spilled_n = sum(f.result() == "spilled" for f in slow_done)
                assert (
                    REGISTRY.get_sample_value("opsloop_sink_spilled_total", {"receiver": "slow"}) == counted + spilled_n
                )
                delivered = [r["effect_id"] for r in h.emitter.receipts if r["status"] == "delivered"]
                assert sorted(delivered) == sorted(e["effect_id"] for e in effects + fast)
                assert {r.status for r in h.ledger.rows()} == {"delivered"}
                # After the spill: straight to the lane again.
                assert await h.run(make_effect("slow", "slack", title="after", session_key="spill-s0")) == ["delivered"]
        assert len(fakes.got("slack", "slack-a")) - fast_before == 5

    asyncio.run(run())


def test_another_worker_takes_over_a_stopped_workers_spill_and_delivers_each_effect_once_in_order(
    fakes: FakeServices, engine
) -> None:
    """Worker a spills and stops (its owner row never beat: dead at once); worker b reads the partition again from
    its committed offset (the first unsettled record), finds a's spill at start and delivers all of it."""
    receivers, env = receivers_for(fakes)
    effects = [
        make_effect("slow", "slack", title=f"over s{s} #{i}", session_key=f"over-{s}")
        for i in range(5)
        for s in range(2)
    ]
    slow_receiver = Receiver("slow", "slack", {}, {"webhook_url": "OPSLOOP_TEST_SLOW_URL"})
    policy = replace(FAST, read_timeout_s=60.0, max_total_s=120.0)

    async def run() -> None:
        async with GatedReceiver().running() as slow:
            env["OPSLOOP_TEST_SLOW_URL"] = slow.url
            both = {**receivers, "slow": slow_receiver}
            async with Harness(both, engine, env, policy=policy, owner="a", backlog_per_destination=2) as a:
                a.dispatcher.generation = lambda: 1
                settled = [await a.submit(e) for e in effects]
                await a.until(lambda _h: slow.waiting == 1, 10, "a's first request held")
                await a.until(lambda _h: sum(f.done() for f in settled) >= len(effects) - 2, 10, "a spilled")
            assert sum(r.status == SPILLED for r in a.ledger.rows()) >= len(effects) - 2
            # Kafka gives b the partition from the first record a did not settle (here the first): all of them again.
            async with Harness(both, engine, env, policy=policy, owner="b", backlog_per_destination=2) as b:
                b.dispatcher.generation = lambda: 2
                await b.dispatcher.start_heartbeat()  # finds a's spill before reading: new effects queue behind it
                assert b.dispatcher._workers["slow"].spilling  # noqa: SLF001
                again = [await b.submit(e) for e in effects]
                slow.gate.set()
                await b.until(lambda _h: all(f.done() for f in again), 30, "b settled what it read")
                await b.until(lambda _h: {r.status for r in b.ledger.rows()} == {"delivered"}, 30, "all delivered")
                await b.until(lambda _h: not b.dispatcher._workers["slow"].spilling, 10, "b left the spill mode")  # noqa: SLF001
            titles = [e["notify"]["title"] for e in effects]
            held = titles[0]  # sent by a, its answer never read: sent again by b (the ambiguous path), once
            assert sorted(set(slow.titles)) == sorted(titles)
            assert {t: slow.titles.count(t) for t in titles if slow.titles.count(t) != 1} in ({}, {held: 2})
            for s in range(2):
                first_seen = [
                    t for i, t in enumerate(slow.titles) if t.startswith(f"over s{s} ") and t not in slow.titles[:i]
                ]
                assert first_seen == [f"over s{s} #{i}" for i in range(5)], first_seen
            assert a.emitter.dead == [] and b.emitter.dead == []

    asyncio.run(run())


@pytest.mark.integration
def test_a_worker_killed_with_spilled_effects_their_offsets_committed_delivers_them_once_after_a_restart(
    app_topics,
    worker_factory,
    fakes: FakeServices,
    tmp_path: Path,
    pg_ledger_url: str,  # noqa: F811
) -> None:
    settings = app_topics
    _, env = routing_file(tmp_path, fakes)
    env["OPSLOOP_SINK_DATABASE_URL"] = pg_ledger_url
    env["OPSLOOP_SINK_BACKLOG_PER_DESTINATION"] = "2"
    tag = uuid.uuid4().hex[:6]
    sessions, per_session = 6, 3
    effects = [
        make_effect("slack-a", "slack", title=f"kill-spill {tag} s{s} #{i}", session_key=f"ks-{tag}-{s}")
        for i in range(per_session)
        for s in range(sessions)
    ]
    ids = {e["effect_id"] for e in effects}
    fakes.script("slack", "slack-a", Answer(hang_s=100))  # the first request hangs: everything else waits or spills
    engine = sa.create_engine(pg_ledger_url.replace("postgresql://", "postgresql+psycopg://", 1))

    def arrivals() -> list[str]:
        bodies = (r.body.decode(errors="replace") for r in fakes.got("slack", "slack-a"))
        return [m.group(0) for b in bodies if (m := re.search(rf"kill-spill {tag} s\d+ #\d+", b))]

    def spilled() -> int:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM delivery_ledger WHERE status = 'spilled'")).scalar_one()

    first = worker_factory(**{**env, "OPSLOOP_SINK_READ_TIMEOUT_S": "90"})
    asyncio.run(put(settings, effects))
    deadline = time.monotonic() + 60
    while not (arrivals() and spilled() >= len(effects) - 3 and asyncio.run(committed_offsets(settings)) > 0):
        assert time.monotonic() < deadline, f"not spilled and committed: {arrivals()}, {spilled()} spilled"
        time.sleep(0.3)
    first.kill()
    hung = arrivals()[0]

    second = worker_factory(**env)
    records = asyncio.run(
        read(
            settings,
            lambda rs: (
                ids
                <= {r.value["effect_id"] for r in rs if r.topic == "deliveries" and r.value["status"] == "delivered"}
            ),
            timeout=120,
        )
    )
    time.sleep(1.0)  # a second send of anything would arrive now
    got = arrivals()
    titles = [e["notify"]["title"] for e in effects]
    assert sorted(set(got)) == sorted(titles)
    assert {t: got.count(t) for t in titles if got.count(t) != 1} in ({}, {hung: 2}), "a spilled effect sent twice"
    for s in range(sessions):  # each session's effects in order (by first arrival)
        first_seen = [t for i, t in enumerate(got) if t.startswith(f"kill-spill {tag} s{s} ") and t not in got[:i]]
        assert first_seen == [f"kill-spill {tag} s{s} #{i}" for i in range(per_session)], first_seen
    assert not [r for r in records if r.topic == "outbox.dlq"]
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT status, count(*) FROM delivery_ledger GROUP BY status")).all()
    engine.dispose()
    assert rows == [("delivered", len(effects))]
    second.stop()
    fakes.unscript("slack", "slack-a")


def test_a_spill_the_database_refuses_waits_with_its_record_unsettled_then_spills(
    fakes: FakeServices, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing dead-lettered and nothing settled while the ledger cannot take the spill: the offset stays put."""
    path = tmp_path / "ledger.db"
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.2, "check_same_thread": False})
    receivers, env = receivers_for(fakes)
    first, second = (make_effect("slow", "slack", title=f"locked #{i}", session_key="locked") for i in range(2))

    async def run() -> None:
        async with GatedReceiver().running() as slow:
            env["OPSLOOP_TEST_SLOW_URL"] = slow.url
            slow_receiver = Receiver("slow", "slack", {}, {"webhook_url": "OPSLOOP_TEST_SLOW_URL"})
            policy = replace(FAST, read_timeout_s=60.0, max_total_s=120.0)
            async with Harness(
                {**receivers, "slow": slow_receiver}, engine, env, policy=policy, backlog_per_destination=1
            ) as h:
                h.dispatcher.ledger_retry_s = 0.1
                held = await h.submit(first)
                await h.until(lambda _h: slow.waiting == 1, 10, "the first request held at the receiver")
                lock = sqlite3.connect(path, isolation_level=None)
                lock.execute("BEGIN EXCLUSIVE")  # the database refuses every write now
                try:
                    spilling = await h.submit(second)
                    await h.until(lambda _h: "delivery ledger unavailable" in caplog.text, 10, "the spill refused")
                    assert not spilling.done() and h.emitter.dead == []
                finally:
                    lock.execute("COMMIT")
                    lock.close()
                assert await asyncio.wait_for(spilling, 10) == "spilled"
                slow.gate.set()
                assert await asyncio.wait_for(held, 10) == "delivered"
                await h.until(lambda _h: len(slow.titles) == 2, 10, "the spilled effect delivered")
                assert slow.titles == ["locked #0", "locked #1"] and h.emitter.dead == []

    asyncio.run(run())
    engine.dispose()


def test_a_destination_missing_its_secret_is_refused_at_intake_never_queued_nor_spilled(
    fakes: FakeServices, engine
) -> None:
    """A storm to a receiver whose secret is not set dead-letters at once with the variable's name: it
    does not fill the destination's backlog and drain through the spill one ledger round trip at a time."""
    receivers, env = receivers_for(fakes)
    unset = Receiver("unset", "slack", {}, {"webhook_url": "OPSLOOP_TEST_UNSET_URL"})

    async def run() -> Harness:
        async with Harness({**receivers, "unset": unset}, engine, env, backlog_per_destination=2) as h:
            effects = [make_effect("unset", "slack", session_key=f"unset-{i}") for i in range(20)]
            assert await h.run(*effects) == ["dead"] * len(effects)
            return h

    h = asyncio.run(run())
    assert [r for r in h.ledger.rows() if r.receiver == "unset"] == []
    assert {d["reason"] for d in h.emitter.dead} == {
        "receiver 'unset': environment variable OPSLOOP_TEST_UNSET_URL (for webhook_url) is not set"
    }
    assert {r["status"] for r in h.emitter.receipts} == {"dead"}
