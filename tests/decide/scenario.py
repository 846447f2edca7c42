"""Driving a real worker: push events, read what it decided, move event time with ticks.

Timers run on event time in these tests (``OPSLOOP_TIMER_CLOCK=event``): a tick is an
ordinary event of a session (``heartbeat``, which decide records and nothing more)
whose ``occurred_at`` moves the watermark of the session's partition, so the ticker
fires that session's due timers. Nothing sleeps for minutes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable, Iterable

from classifier.dataset import load_rules, rule_to_event
from streams.producer import EventProducer
from streams.reader import Record, TopicReader
from streams.settings import Settings

T0 = 1_700_000_000_000
MIN = 60_000

def worker_env(tmp_path: Path) -> dict[str, str]:
    """Event-time timers, a fast ticker, an ack secret, the sinks' ledger in the test's directory.

    No receiver secrets are set: the sinks in the worker dead-letter what they cannot
    deliver, which is not what these tests look at (they read outbox).
    """
    return {
        "OPSLOOP_TIMER_CLOCK": "event",
        "OPSLOOP_TIMER_TICK_S": "0.2",
        "OPSLOOP_ACK_SECRET": "scenario-secret",
        "OPSLOOP_ACK_BASE_URL": "https://opsloop.test/ack",
        "OPSLOOP_DECIDE_BATCH_WITHIN_S": "0.05",
        "OPSLOOP_SINK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
    }


_RULES: dict[str, Any] = {}


def rule(name: str):
    if not _RULES:
        _RULES.update({r.name: r for r in load_rules()})
    return _RULES[name]


def alert(rule_name: str, *, service: str, instance: str, at: int, status: str = "firing", source: str = "prometheus",
          eid: str | None = None) -> dict[str, Any]:
    """A real catalogue rule as the event ingest makes of it, in the session ingest would pick."""
    event = rule_to_event(rule(rule_name), org="acme", occurred_at=at, instance=instance, status=status, source=source)
    event["labels"]["service"] = service
    event["session_key"] = f"acme:alert:{event['labels']['alertname']}:{service}"
    event["session_rule"] = "alert-group"
    event["payload"]["fingerprint"] = f"{event['payload']['fingerprint']}-{service}"
    if eid:
        event["event_id"] = eid
    return event


def tick(session: str, at: int) -> dict[str, Any]:
    return {"event_id": f"tick:{session}:{at}", "session_key": session, "kind": "telemetry", "type": "heartbeat",
            "source": "test", "org": "acme", "occurred_at": at, "labels": {}, "annotations": {}, "payload": None}


def webhook(etype: str, session: str, at: int, *, source: str = "ingest", actor: str = "alice",
            body_json: str = "{}") -> dict[str, Any]:
    return {"event_id": f"{etype}:{session}:{at}", "session_key": session, "kind": "webhook", "type": etype,
            "source": source, "org": "acme", "occurred_at": at, "labels": {}, "annotations": {},
            "payload": {"provider": source, "action": etype.rsplit(".", 1)[-1], "subject": session, "actor": actor,
                        "body_json": body_json}}


class Topics:
    """Reads outbox and decisions from the beginning, keeping what was read (no consumer group)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.records: list[Record] = []
        self._reader: TopicReader | None = None

    async def __aenter__(self) -> "Topics":
        self._reader = TopicReader(self.settings, ["outbox", "decisions"], from_beginning=True)
        await self._reader.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._reader is not None
        await self._reader.__aexit__(*exc)

    async def push(self, events: Iterable[dict[str, Any]]) -> None:
        async with EventProducer(self.settings) as producer:
            await producer.send_many(list(events))

    async def until(self, condition: Callable[["Topics"], bool], timeout: float = 60.0, what: str = "") -> None:
        assert self._reader is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition(self):
            if loop.time() > deadline:
                import json as _json, os as _os
                if _os.environ.get("SCENARIO_DEBUG"):
                    with open(_os.environ["SCENARIO_DEBUG"], "w") as fh:
                        _json.dump({"decisions": self.decisions(), "effects": self.effects()}, fh, default=str)
                raise TimeoutError(f"{what or 'condition'} not met within {timeout:.0f}s "
                                   f"({len(self.decisions())} decisions, {len(self.effects())} effects read)")
            batch = await self._reader._consumer.getmany(timeout_ms=200, max_records=5000)  # noqa: SLF001
            for msgs in batch.values():
                for msg in msgs:
                    self.records.append(self._reader._decode(msg))  # noqa: SLF001

    def decisions(self) -> list[dict[str, Any]]:
        return [r.value for r in self.records if r.topic == "decisions" and r.value]

    def effects(self) -> list[dict[str, Any]]:
        return [r.value for r in self.records if r.topic == "outbox" and r.value]

    def decided(self, event_ids: Iterable[str]) -> bool:
        have = {d["event_id"] for d in self.decisions()}
        return set(event_ids) <= have

    def notifications(self, session: str | None = None) -> list[dict[str, Any]]:
        """Distinct notify effects (a re-processed event re-sends the same effect id), oldest first."""
        seen: dict[str, dict[str, Any]] = {}
        for e in self.effects():
            if e["type"] == "notify" and (session is None or e["session_key"] == session):
                seen.setdefault(e["effect_id"], e)
        return sorted(seen.values(), key=lambda e: (e["created_at"], e["effect_id"]))
