"""``opsloop demo``: the whole loop on embedded defaults, then a clean exit.

Starts the local Apache Kafka broker (unless KAFKA_BOOTSTRAP points at one),
applies topics.yaml, starts a worker, pushes a handful of real alerts from the
awesome-prometheus-alerts catalogue as Alertmanager-style events, prints what
comes out of ``outbox`` (and the timer effects the decisions carry), and stops
everything it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.devtools.broker import LocalKafka
from streams.devtools.processes import FAST_GROUP_ENV, WorkerProcess
from streams.kafka.admin import apply, render
from streams.kafka.catalogue import load_catalogue
from streams.kafka.producer import EventProducer
from streams.kafka.reader import TopicReader
from streams.model.effects import timer_effects
from streams.settings import Settings

if TYPE_CHECKING:
    from aiohttp import web

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


def demo_events(count: int, now_ms: int, sessions: Path | None = None) -> list[dict[str, Any]]:
    """``count`` catalogue alerts as ingest makes them, keyed by ``sessions`` (the session rules file) as ingest keys
    them: a demo alert read ``acme:alert:1d328f424b138190`` (a catalogue rendering's hash) where ingest names it."""
    from classifier.dataset import load_rules, rule_to_event
    from streams.ingest.sessions import load_session_rules, make_facts, session_key

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
        # Each demo alert comes from its own service, as real ones do: its session key names it.
        event["labels"].setdefault("service", event["labels"].get("instance", f"demo-{i}").split(".")[0])
        if sessions is not None:
            facts = make_facts(
                org=event["org"],
                kind=event["kind"],
                type=event["type"],
                source=event["source"],
                labels=event["labels"],
                fingerprint=event["payload"]["fingerprint"],
            )
            event["session_key"], event["session_rule"] = session_key(load_session_rules(sessions), facts)
        events.append(event)
    return events


def message_line(payload: Mapping[str, Any]) -> str:
    """One line for a chat message: Slack's text, a Teams card's summary or first text block."""
    text = payload.get("text") or payload.get("summary")
    if not text:
        for attachment in payload.get("attachments") or []:
            content = attachment.get("content") if isinstance(attachment, dict) else None
            body = content.get("body") if isinstance(content, dict) else None
            text = next((b.get("text") for b in body or [] if isinstance(b, dict) and b.get("text")), None)
            if text:
                break
    return " ".join(str(text or json.dumps(payload)[:200]).split())[:300]


class LocalReceivers:
    """Stands in for Slack and Teams in the demo and ``opsloop dev``: accepts each webhook post, keeps it (and,
    given ``log_path``, writes a line for it there), answers as the service does.

    The worker's real sink delivers to it (formatting, rate limits, ledger and all),
    so the demo shows what a channel would have received without any account.
    """

    def __init__(self, port: int = 0, log_path: Path | None = None) -> None:
        self.received: list[tuple[str, str, dict[str, Any]]] = []
        self.port = port
        self.log_path = log_path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    def url(self, channel: str, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{channel}/{name}"

    def start(self) -> LocalReceivers:
        import threading

        from aiohttp import web

        ready = threading.Event()

        async def handle(request: web.Request) -> web.Response:
            payload = await request.json()
            channel, name = request.match_info["channel"], request.match_info["name"]
            self.received.append((channel, name, payload))
            if self.log_path is not None:
                with self.log_path.open("a") as log:
                    log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {channel}:{name} {message_line(payload)}\n")
            return web.Response(text="ok") if channel == "slack" else web.Response(status=202)

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/{channel}/{name}", handle)
            self._runner = web.AppRunner(app, handle_signals=False)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            loop.run_until_complete(site.start())
            self.port = self._runner.addresses[0][1]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        threading.Thread(target=run, name="demo-receivers", daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("the demo's local receivers did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


def format_received(channel: str, name: str, payload: dict[str, Any]) -> str:
    text = payload.get("text") or ""
    if not text and payload.get("attachments"):  # Teams: the card's first text block
        body = payload["attachments"][0].get("content", {}).get("body", [])
        text = next((b.get("text", "") for b in body if b.get("type") == "TextBlock"), "")
    return f"  {channel}:{name:<13} {text[:110]}"


def format_effect(effect: dict[str, Any]) -> str:
    """One effect as the demo prints it: notifications in full, the rest in a line."""
    kind, tail = effect["type"], f"effect={effect['effect_id'][:12]}  session={effect['session_key']}"
    if kind == "notify":
        n = effect["notify"]
        fields = ", ".join(f"{k}={v}" for k, v in (n.get("fields") or {}).items())
        return (
            f"  [{n['severity'].upper():7}] {n['title']}\n"
            f"            notify → {n['channel']}:{n['receiver']}  action={n['action']}  {tail}\n"
            f"            {fields}"
        )
    if kind == "schedule_timer":
        t = effect["timer"]
        after = (t["fire_at"] - effect["created_at"]) / 1000
        return f"            schedule_timer {t['purpose']} step {t['step']} in {after:.0f}s  {tail}"
    if kind == "cancel_timers":
        return f"            cancel_timers {effect['cancel']['prefix'] or '(all)'}  {tail}"
    r = effect.get("remediate") or {}
    mode = "dry run" if r.get("dry_run", True) else "live"
    return f"            remediate {r.get('action', '')} ({mode})  {tail}"


async def _push_and_read(
    settings: Settings, events: list[dict[str, Any]], timeout: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pushed alerts' effects on ``outbox``, and the timer effects their decisions carry."""
    async with TopicReader(settings, ["outbox", "decisions"], from_beginning=False) as reader:
        async with EventProducer(settings) as producer:
            await producer.send_many(events)
        print(f"pushed {len(events)} alerts to events.telemetry; waiting for outbox ...", flush=True)
        wanted = {e["event_id"] for e in events}

        def done(rs: list[Any]) -> bool:  # every alert has a decision and an effect on outbox
            seen = {(r.topic, r.value["event_id"]) for r in rs if r.value}
            return all((t, e) in seen for t in ("outbox", "decisions") for e in wanted)

        records = await reader.collect(done, timeout=timeout)
    mine = [(r.topic, r.value) for r in records if r.value and r.value["event_id"] in wanted]
    return [v for t, v in mine if t == "outbox"], [e for t, v in mine if t == "decisions" for e in timer_effects(v)]


def run_demo(alerts: int = 6, timeout: float = 120.0) -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="opsloop-demo-"))
    broker = None
    worker = None
    receivers = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    try:
        if not bootstrap:
            print("starting a local Apache Kafka broker (KRaft) ...", flush=True)
            broker = LocalKafka(workdir / "kafka").start()
            bootstrap = broker.bootstrap
        print(f"broker at {bootstrap}; demo data in {workdir}", flush=True)
        prefix = f"demo-{uuid.uuid4().hex[:6]}." if not broker else ""
        env = {
            **FAST_GROUP_ENV,
            "KAFKA_BOOTSTRAP": bootstrap,
            "OPSLOOP_TOPIC_PREFIX": prefix,
            "OPSLOOP_APP_ID": f"opsloop-{prefix or 'demo'}".rstrip("."),
            "OPSLOOP_WEB_ENABLED": "false",
            "OPSLOOP_DATA_DIR": str(workdir / "worker"),
            "OPSLOOP_LOG_LEVEL": "warning",
            "OPSLOOP_SINK_SINGLE_NODE": "true",  # one worker; its SQLite ledger lives and dies with the demo
        }
        settings = Settings.from_env(kafka_bootstrap=bootstrap, topic_prefix=prefix)
        print(render(asyncio.run(apply(settings, load_catalogue(settings.topics_file)))), flush=True)
        receivers = LocalReceivers().start()
        env.update(
            {
                "OPSLOOP_SLACK_INFRA_WEBHOOK": receivers.url("slack", "infra-slack"),
                "OPSLOOP_SLACK_ONCALL_WEBHOOK": receivers.url("slack", "oncall-slack"),
                "OPSLOOP_TEAMS_OPS_WEBHOOK": receivers.url("teams", "teams-ops"),
            }
        )
        worker = WorkerProcess(env, workdir / "worker.log").start()
        print("worker started", flush=True)
        events = demo_events(alerts, int(time.time() * 1000), settings.sessions_path())
        effects, timers = asyncio.run(_push_and_read(settings, events, timeout))
        print(f"\noutbox: {len(effects)} effects for {len(events)} alerts (and {len(timers)} timer effects")
        print("        on their decisions: opsloop keeps its timers itself, no sink acts on them)\n")
        for effect in sorted(effects + timers, key=lambda e: e["created_at"]):
            print(format_effect(effect))
        chat = [e for e in effects if e["type"] == "notify" and e["notify"]["channel"] in ("slack", "teams")]
        deadline = time.monotonic() + 45  # Slack allows about one message per second per webhook
        while len(receivers.received) < len(chat) and time.monotonic() < deadline:
            time.sleep(0.2)
        print(f"\ndelivered: {len(receivers.received)} of {len(chat)} chat notifications reached the local receivers\n")
        for channel, name, payload in receivers.received:
            print(format_received(channel, name, payload))
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
        if receivers is not None:
            receivers.stop()
        if broker is not None:
            broker.close()
        shutil.rmtree(workdir, ignore_errors=True)
