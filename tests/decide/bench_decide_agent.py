"""Benchmark: events per second through a real decide worker, beside the pure fold's own rate.

Run: .venv/bin/python -m tests.decide.bench_decide_agent [--events 20000]

Starts a local Kafka broker (or uses KAFKA_BOOTSTRAP), one `opsloop worker`, pushes a
storm of real catalogue alerts (10 alerts per session) and times until every event has
its decision record. Printed beside it, on the same events in this process: the pure
decide fold alone, and the decide fold plus the Avro encode of its outputs, which is
the floor the agent cannot beat.
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

from streams.devtools.broker import LocalKafka
from streams.devtools.processes import FAST_GROUP_ENV, WorkerProcess
from streams.kafka.admin import apply
from streams.kafka.catalogue import load_catalogue
from streams.kafka.codec import default_codec
from streams.kafka.producer import EventProducer
from streams.kafka.reader import TopicReader
from streams.settings import Settings


def storm(n: int, t0: int) -> list[dict]:
    from classifier.dataset import load_rules, rule_to_event

    rules = [r for r in load_rules() if r.severity in ("warning", "critical")][:50]
    events = []
    for i in range(n):
        rule = rules[(i // 10) % len(rules)]
        session = i // 10
        ev = rule_to_event(rule, occurred_at=t0 + i, instance=f"host-{i % 10}.bench:9100", source="prometheus")
        ev["session_key"] = f"bench:alert:{session}"
        ev["event_id"] = f"bench-{i}"
        events.append(ev)
    return events


def pure_rate(events: list[dict]) -> tuple[float, float]:
    from agents.runtime import load_classify
    from agents.sinks.channels import specs
    from streams.core.decide import Context, decide
    from streams.model.runbooks import load_runbook_set

    rset = load_runbook_set(Settings.from_env().runbooks_dir, channels=specs())
    classify, _ = load_classify()
    codec = default_codec()
    verdicts = classify(events)
    states: dict = {}
    start = time.perf_counter()
    for ev, v in zip(events, verdicts):
        states[ev["session_key"]] = decide(states.get(ev["session_key"]), ev, Context(verdict=v, runbooks=rset)).state
    fold = len(events) / (time.perf_counter() - start)
    states = {}
    start = time.perf_counter()
    for ev, v in zip(events, verdicts):
        d = decide(states.get(ev["session_key"]), ev, Context(verdict=v, runbooks=rset))
        states[ev["session_key"]] = d.state
        for e in d.effects:
            codec.encode("opsloop.Effect", e)
        codec.encode("opsloop.Decision", d.record)
    return fold, len(events) / (time.perf_counter() - start)


async def through_worker(settings: Settings, events: list[dict], timeout: float) -> float:
    wanted = len(events)
    async with TopicReader(settings, ["decisions"], from_beginning=True) as reader:
        async with EventProducer(settings) as producer:
            start = time.perf_counter()
            for i in range(0, len(events), 2000):
                await producer.send_many(events[i : i + 2000])
        seen: set[str] = set()

        position = [0]

        def done(records) -> bool:
            for r in records[position[0] :]:
                if r.value:
                    seen.add(r.value["event_id"])
            position[0] = len(records)
            return len(seen) >= wanted

        await reader.collect(done, timeout=timeout)
        return wanted / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
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
    }
    os.environ.update(env)
    settings = Settings.from_env()
    worker = None
    try:
        asyncio.run(apply(settings, load_catalogue(settings.topics_file)))
        worker = WorkerProcess(env, work / "worker.log").start()
        events = storm(args.events, 1_700_000_000_000)
        warm = storm(200, 1_600_000_000_000)
        for ev in warm:
            ev["event_id"] = "warm-" + ev["event_id"]
            ev["session_key"] = "warm:" + ev["session_key"]
        asyncio.run(through_worker(settings, warm, 120))
        rate = asyncio.run(through_worker(settings, events, 600))
        fold, fold_codec = pure_rate(events)
        print(f"{'events':>8} {'worker (events/s)':>18} {'decide only':>12} {'decide+Avro':>12}")
        print(f"{len(events):>8} {rate:>18,.0f} {fold:>12,.0f} {fold_codec:>12,.0f}")
    finally:
        if worker:
            worker.stop()
        if broker:
            broker.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
