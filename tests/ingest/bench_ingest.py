"""Ingest throughput: HTTP posts through ``opsloop ingest`` vs the bare producer path, one run.

    .venv/bin/python -m tests.ingest.bench_ingest [--alerts 20000]

Starts a local Kafka broker (or uses $KAFKA_BOOTSTRAP), a fresh topic prefix and an
``opsloop ingest`` process, then moves the same number of distinct alerts three ways
and prints alerts/s side by side:

* baseline: ``EventProducer.send_many`` in this process (validate, encode, produce,
  wait for acks=all), chunks of 500, no HTTP;
* ingest, Prometheus-style batches: ``POST /api/v2/alerts`` with 100 alerts a post,
  8 concurrent clients;
* ingest, one alert a post, 16 concurrent clients (the worst case: HTTP per alert).

Nothing is asserted: the figures are for the README and for spotting regressions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from streams.devtools.broker import LocalKafka
from streams.ingest.alerts import prometheus_events
from streams.ingest.sessions import load_session_rules
from streams.kafka.producer import EventProducer, now_ms
from streams.settings import Settings
from tests.ingest.conftest import IngestServer, apply_topics, bearer, ingest_env, settings_for


def alerts(n: int, tag: str) -> list[dict]:
    start = datetime.now(UTC) - timedelta(minutes=5)
    ends = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    return [
        {
            "labels": {
                "alertname": f"Bench{i % 50}",
                "instance": f"host-{i}:9100",
                "job": "node",
                "severity": "warning",
                "run": tag,
            },
            "annotations": {"summary": f"bench alert {i}", "description": "load is high " * 8},
            "startsAt": (start + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z"),
            "endsAt": ends,
            "generatorURL": "http://prometheus:9090/graph?g0.expr=node_load1",
        }
        for i in range(n)
    ]


async def baseline(settings, batch: list[dict]) -> float:
    rules = load_session_rules(Settings.from_env().sessions_path())
    events = prometheus_events(batch, org="bench", received_at=now_ms(), rules=rules)
    started = time.perf_counter()
    async with EventProducer(settings) as producer:
        for i in range(0, len(events), 500):
            await producer.send_many(events[i : i + 500])
    return time.perf_counter() - started


async def through_ingest(
    server: IngestServer, batch: list[dict], per_post: int, clients: int
) -> tuple[float, list[float]]:
    posts = [batch[i : i + per_post] for i in range(0, len(batch), per_post)]
    queue: asyncio.Queue = asyncio.Queue()
    for post in posts:
        queue.put_nowait(post)
    latencies: list[float] = []

    async def client() -> None:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=1)) as http:
            while not queue.empty():
                post = queue.get_nowait()
                t = time.perf_counter()
                answer = await http.post(server.url("/api/v2/alerts"), json=post, headers=bearer())
                latencies.append(time.perf_counter() - t)
                if answer.status_code != 200:
                    raise RuntimeError(f"ingest answered {answer.status_code}: {answer.text}")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started, latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=20000)
    args = parser.parse_args()
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = LocalKafka().start()
        bootstrap = broker.bootstrap
    env = ingest_env(bootstrap, f"bench{uuid.uuid4().hex[:6]}.", OPSLOOP_LOG_LEVEL="warning")
    settings = settings_for(env)
    apply_topics(settings)
    server = IngestServer(env, Path(tempfile.mkdtemp()) / "ingest.log").start()
    n = args.alerts
    try:
        rows = [
            (
                "baseline: EventProducer.send_many, chunks of 500",
                asyncio.run(baseline(settings, alerts(n, "base"))),
                None,
            )
        ]
        seconds, lat = asyncio.run(through_ingest(server, alerts(n, "b100"), 100, 8))
        rows.append(("ingest: 100 alerts/post, 8 clients", seconds, lat))
        n1 = min(n, 5000)
        seconds, lat = asyncio.run(through_ingest(server, alerts(n1, "b1"), 1, 16))
        rows.append((f"ingest: 1 alert/post, 16 clients ({n1} alerts)", seconds, lat))
    finally:
        server.stop()
        if broker:
            broker.close()
    print(f"\n{'path':<52} {'alerts/s':>10} {'post p50 ms':>12} {'post p99 ms':>12}")
    for i, (name, seconds, lat) in enumerate(rows):
        count = n1 if i == 2 else n
        p50 = f"{statistics.median(lat) * 1000:.1f}" if lat else "-"
        p99 = f"{sorted(lat)[int(len(lat) * 0.99) - 1] * 1000:.1f}" if lat else "-"
        print(f"{name:<52} {count / seconds:>10.0f} {p50:>12} {p99:>12}")


if __name__ == "__main__":
    main()
