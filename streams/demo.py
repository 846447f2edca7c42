"""``opsloop demo``: the whole loop on embedded defaults, then a clean exit.

Starts the local Apache Kafka broker (unless KAFKA_BOOTSTRAP points at one),
applies topics.yaml, starts a worker, pushes a handful of real alerts from the
awesome-prometheus-alerts catalogue as Alertmanager-style events, prints what
comes out of ``outbox``, and stops everything it started.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from streams.broker import LocalKafka
from streams.processes import FAST_GROUP_ENV, WorkerProcess
from streams.producer import EventProducer
from streams.reader import TopicReader
from streams.settings import Settings
from streams.topics import load_catalogue
from streams.topics_admin import apply, render

# One rule from each corner of the catalogue, so the output shows variety.
DEMO_RULES = (
    "Host out of memory",
    "Host high CPU load",
    "Host out of disk space",
    "Prometheus target missing",
    "PostgreSQL down",
    "SSL certificate expiry (< 7 days)",
    "Kubernetes pod crash looping",
    "Nginx high HTTP 5xx error rate",
)


def demo_events(count: int, now_ms: int) -> list[dict]:
    from classifier.dataset import load_rules, rule_to_event

    rules = load_rules()
    chosen = [r for r in rules if r.name in DEMO_RULES]
    for rule in rules:  # top up from the catalogue if fewer named rules exist
        if len(chosen) >= count:
            break
        if rule not in chosen and rule.severity == "critical":
            chosen.append(rule)
    events = []
    for i, rule in enumerate(chosen[:count]):
        event = rule_to_event(rule, occurred_at=now_ms + i)
        event["event_id"] = f"demo-{uuid.uuid4().hex[:12]}"
        events.append(event)
    return events


def format_effect(effect: dict) -> str:
    n = effect.get("notify") or {}
    fields = ", ".join(f"{k}={v}" for k, v in (n.get("fields") or {}).items())
    return (
        f"  [{n.get('severity', '?').upper():7}] {n.get('title', '')}\n"
        f"            {effect['type']} → {n.get('channel')}:{n.get('receiver')}  action={n.get('action')}"
        f"  effect={effect['effect_id'][:12]}  session={effect['session_key']}\n"
        f"            {fields}"
    )


async def _push_and_read(settings: Settings, events: list[dict], timeout: float) -> list[dict]:
    async with TopicReader(settings, ["outbox"], from_beginning=False) as reader:
        async with EventProducer(settings) as producer:
            await producer.send_many(events)
        print(f"pushed {len(events)} alerts to events.telemetry; waiting for outbox ...", flush=True)
        wanted = {e["event_id"] for e in events}
        records = await reader.collect(
            lambda rs: wanted <= {r.value["event_id"] for r in rs if r.value}, timeout=timeout
        )
    return [r.value for r in records if r.value and r.value["event_id"] in wanted]


def run_demo(alerts: int = 6, timeout: float = 120.0) -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="opsloop-demo-"))
    broker = None
    worker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    try:
        if not bootstrap:
            print("starting a local Apache Kafka broker (KRaft) ...", flush=True)
            broker = LocalKafka(workdir / "kafka").start()
            bootstrap = broker.bootstrap
        print(f"broker at {bootstrap}", flush=True)
        prefix = f"demo-{uuid.uuid4().hex[:6]}." if not broker else ""
        env = {
            **FAST_GROUP_ENV,
            "KAFKA_BOOTSTRAP": bootstrap,
            "OPSLOOP_TOPIC_PREFIX": prefix,
            "OPSLOOP_APP_ID": f"opsloop-{prefix or 'demo'}".rstrip("."),
            "OPSLOOP_WEB_ENABLED": "false",
            "OPSLOOP_DATA_DIR": str(workdir / "worker"),
            "OPSLOOP_LOG_LEVEL": "warning",
        }
        settings = Settings.from_env(kafka_bootstrap=bootstrap, topic_prefix=prefix)
        print(render(asyncio.run(apply(settings, load_catalogue(settings.topics_file)))), flush=True)
        worker = WorkerProcess(env, workdir / "worker.log").start()
        print("worker started", flush=True)
        events = demo_events(alerts, int(time.time() * 1000))
        effects = asyncio.run(_push_and_read(settings, events, timeout))
        print(f"\noutbox: {len(effects)} effects for {len(events)} alerts\n")
        for effect in sorted(effects, key=lambda e: e["created_at"]):
            print(format_effect(effect))
        print(f"\ndone in {time.monotonic() - started:.1f}s")
        return 0
    except TimeoutError as exc:
        print(f"opsloop demo: {exc}", file=sys.stderr)
        if worker is not None:
            print(worker.log()[-3000:], file=sys.stderr)
        return 1
    finally:
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.close()
