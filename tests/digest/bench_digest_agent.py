"""Benchmark: events per second through the decide agent and the digest (count, repartition, fold).

Run: .venv/bin/python -m tests.digest.bench_digest_agent [--records 50000] [--orgs 5]

Starts a local Kafka broker (or uses KAFKA_BOOTSTRAP) and one `opsloop worker` with the
event-time clock, writes ``--records`` heartbeat events of day D for ``--orgs`` orgs to
``events.telemetry`` (the decide agent decides them and counts them for the digest from
its own batches; before issue 17 this bench wrote decision records straight to
``decisions``, which the digest no longer reads), then one event per org on D+1 past the
digest hour, and times until every org's digest for D is in ``outbox``; the counts in the
digests must add up to the events written. A burst like this is the backlog case: the next
morning's records reach the fold before some of the day's, and only the barrier (see
agents/digest.py) keeps the digests whole.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from streams.core.digest import utc_ms
from streams.devtools.broker import LocalKafka
from streams.devtools.processes import FAST_GROUP_ENV, WorkerProcess
from streams.kafka.admin import apply
from streams.kafka.catalogue import load_catalogue
from streams.kafka.producer import EventProducer
from streams.kafka.reader import TopicReader
from streams.settings import Settings

D = (2031, 3, 4)


def event(i: int, org: str, at: int) -> dict:
    """A heartbeat of ``org``: decided as one event, no effects."""
    return {
        "event_id": f"e-{org}-{i}",
        "session_key": f"{org}:heartbeat:bench:{i % 97}",
        "kind": "telemetry",
        "type": "heartbeat",
        "source": "bench",
        "org": org,
        "occurred_at": at,
        "labels": {},
        "annotations": {},
        "payload": None,
    }


async def run(
    settings: Settings, records: int, orgs: list[str], timeout: float, day: tuple[int, int, int] = D
) -> tuple[float, int]:
    """Records of ``day`` for ``orgs``, then one each on the next morning; (records/s, events counted)."""
    day_start = utc_ms(*day, 1)
    async with TopicReader(settings, ["outbox"], from_beginning=False) as reader:
        async with EventProducer(settings, linger_ms=20) as producer:
            start = time.perf_counter()
            next_day = utc_ms(day[0], day[1], day[2] + 1, 9)
            rows = [event(i, orgs[i % len(orgs)], day_start + i) for i in range(records)]
            rows += [event(records + k, org, next_day) for k, org in enumerate(orgs)]
            await producer.send_many(rows)
        got: dict[str, int] = {}

        def done(found) -> bool:
            for r in found:
                if r.value and r.value["runbook"] == "digest":
                    got[r.value["org"]] = int(r.value["notify"]["fields"]["events"])
            return len(got) == len(orgs)

        await reader.collect(done, timeout=timeout)
        return records / (time.perf_counter() - start), sum(got.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--orgs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="opsloop-bench-"))
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = LocalKafka(work / "kafka").start()
        bootstrap = broker.bootstrap
    tag = uuid.uuid4().hex[:6]
    env = {
        **FAST_GROUP_ENV,
        "KAFKA_BOOTSTRAP": bootstrap,
        "OPSLOOP_TOPIC_PREFIX": f"b{tag}.",
        "OPSLOOP_APP_ID": f"opsloop-b{tag}",
        "OPSLOOP_WEB_ENABLED": "false",
        "OPSLOOP_DATA_DIR": str(work / "data"),
        "OPSLOOP_LOG_LEVEL": "warning",
        "OPSLOOP_TIMER_CLOCK": "event",
        "OPSLOOP_SINK_SINGLE_NODE": "true",  # one worker, SQLite ledger
        "OPSLOOP_SINK_DATABASE_URL": f"sqlite:///{work / 'ledger.db'}",
    }
    os.environ.update(env)
    settings = Settings.from_env()
    worker = None
    try:
        asyncio.run(apply(settings, load_catalogue(settings.topics_file)))
        worker = WorkerProcess(env, work / "worker.log").start()
        asyncio.run(run(settings, 100, ["warm"], 120, day=(D[0], D[1], D[2] - 2)))  # the worker has joined
        rate, counted = asyncio.run(run(settings, args.records, [f"org{k}" for k in range(args.orgs)], 600))
        print(f"{'events':>8} {'orgs':>5} {'decide+digest (events/s)':>25} {'counted':>8}")
        print(f"{args.records:>8} {args.orgs:>5} {rate:>25,.0f} {counted:>8}")
        assert counted == args.records, f"digests counted {counted} of {args.records} events"
    finally:
        if worker:
            worker.stop()
        if broker:
            broker.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
