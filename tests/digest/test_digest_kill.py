"""Must show: a worker SIGKILLed between decide's produce and its state write leaves a day's
digest counts exact, and the worker does not read ``decisions`` back (issue 17).

A real worker (through :mod:`tests.digest.kill_worker`) decides a day D of known traffic for
acme and kills itself once, after the produce of the batch holding a marked event was
acknowledged (its decisions, effects and digest counts in Kafka) and before the batch's state
was written or its offsets committed. A second worker decides that batch again: ``decisions``
holds those events twice. The digest for D, sent once event time passes acme's hour on D+1,
must count each event once. Before issue 17 the digest counted ``decisions`` records, so the
re-decided events counted twice and this failed; its consumer group also committed offsets on
``decisions``, which it no longer reads.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams.core.digest import digest_effect
from streams.settings import Settings
from tests.decide.scenario import Topics, worker_env
from tests.digest.kill_worker import FAULT_LABEL, KILL, ONCE_ENV, KillWorkerProcess
from tests.digest.test_digest_agent import ROOT, ROUTING_YAML, beat, digests, episode, expected, local_ms

pytestmark = pytest.mark.integration

BERLIN = "Europe/Berlin"
DIGEST_YAML = "default: {enabled: false}\ndigests:\n  - {org: acme, hour: 6, timezone: Europe/Berlin}\n"


def traffic(d: date) -> list[dict]:
    """Acme's day: three alert episodes (no timer fires: each resolves first) around a marked heartbeat."""
    marked = beat("acme", local_ms(d, 9, 30, BERLIN))
    marked["labels"] = {FAULT_LABEL: KILL}
    return [
        beat("acme", local_ms(d, 0, 10, BERLIN)),
        *episode("acme", "Host high CPU load", "api", local_ms(d, 9, 0, BERLIN), 3, "cpu"),
        marked,
        *episode("acme", "Host out of memory", "web", local_ms(d, 10, 0, BERLIN), 1, "mem"),
        *episode("acme", "Host high CPU load", "db", local_ms(d, 11, 0, BERLIN), 2, "db"),
        beat("acme", local_ms(d, 23, 0, BERLIN)),
    ]


async def committed_topics(settings: Settings) -> set[str]:
    admin = AIOKafkaAdminClient(**settings.kafka_client_config())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.app_id)
    finally:
        await admin.close()
    return {tp.topic[len(settings.topic_prefix) :] for tp in offsets}


def test_a_kill_between_decides_produce_and_its_state_write_counts_each_event_once(
    topics: Settings, opsloop_env: dict[str, str], tmp_path: Path
) -> None:
    started = time.monotonic()
    d = date.today() + timedelta(days=365)  # event time ahead of the wall clock of the sinks' receipts
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    shutil.copy(ROOT / "runbooks" / "default.yaml", runbooks)
    (runbooks / "routing.yaml").write_text(ROUTING_YAML)
    (runbooks / "digest.yaml").write_text(DIGEST_YAML)
    killed = tmp_path / "killed"
    env = {**opsloop_env, **worker_env(tmp_path), "OPSLOOP_RUNBOOKS_DIR": str(runbooks), ONCE_ENV: str(killed)}
    events = traffic(d)
    workers = [KillWorkerProcess(env, tmp_path / "worker-0.log").start()]

    async def scenario() -> None:
        async with Topics(topics) as t:
            await t.push(events)
            deadline = time.monotonic() + 90
            while workers[0].alive:  # dies on the marked event's batch
                assert time.monotonic() < deadline, "the worker did not reach the marked event"
                await asyncio.sleep(0.2)
            assert killed.exists()
            workers.append(KillWorkerProcess(env, tmp_path / "worker-1.log").start())
            await t.until(lambda t: t.decided(e["event_id"] for e in events), timeout=90, what="the day decided")
            await t.quiescent(timeout=90)
            decisions = t.decisions()
            ids = [x["event_id"] for x in decisions]
            again = {i for i in ids if ids.count(i) > 1}
            assert marked_id in again, "the killed batch was not decided again: the scenario did not bite"

            await t.push([beat("acme", local_ms(d, 6, 1, BERLIN, days=1))])
            await t.until(lambda t: any(e["org"] == "acme" for e in digests(t)), timeout=60, what="acme's digest")
            first: dict[str, dict] = {}
            for x in t.decisions():
                first.setdefault(x["event_id"], x)
            want = expected(list(first.values()), [], "acme", d)
            assert want.events == len(events)
            (got,) = [e for e in digests(t) if e["org"] == "acme"]
            assert got == digest_effect(
                "acme", d.isoformat(), want, channel="teams", receiver="ops-teams", created_at=got["created_at"]
            )
            assert not [x for x in t.decisions() if x["kind"] == "timer"]
            assert "decisions" not in await committed_topics(topics)  # the worker's group does not read it

    marked_id = next(e["event_id"] for e in events if e["labels"].get(FAULT_LABEL) == KILL)
    try:
        asyncio.run(scenario())
    finally:
        for w in workers:
            w.stop()
    print(f"digest kill scenario: {time.monotonic() - started:.1f}s ({len(events)} events)")
