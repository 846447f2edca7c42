"""Driving a real worker: push events, read what it decided, move event time with ticks.

Timers run on event time in these tests (``OPSLOOP_TIMER_CLOCK=event``): a tick is an
ordinary event of a session (``heartbeat``, which decide records and nothing more)
whose ``occurred_at`` moves the watermark of the session's partition, so the ticker
fires that session's due timers. Nothing sleeps for minutes.

Nothing sleeps to wait for something that must NOT happen either. Before a negative
assertion a test waits for the records it is about:

- :meth:`Topics.quiescent`: the worker's group committed to the end of every event
  topic (decide acks an event only after its effects and decision records were
  acknowledged by Kafka), then outbox and decisions are read to their end offsets.
- :meth:`Topics.ticker_passed` with a sentinel (:func:`sentinel_alert`): the first
  alert of a fresh session whose group flush is due at the partition's watermark, so
  only the ticker can fire it. The ticker promotes every due timer of the partitions
  it owns in one pass over the timers table, oldest first, and its passes do not
  overlap (agents/timers.py). Once the sentinel's timer is decided, every timer that
  was due when the sentinel was scheduled (due wrongly or rightly) has been promoted;
  quiescence then means it has been decided and its effects read.
- :meth:`Topics.settled`: quiescent, then a sentinel through the ticker: nothing is
  left in flight, not even a timer the last events made due.

The sentinel's session gets a notification of its own; assertions leave it out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from classifier.dataset import alert_name, load_rules, rule_to_event
from streams.kafka.batchsend import partition_for_key
from streams.kafka.catalogue import EVENT_TOPICS, by_name, load_catalogue
from streams.kafka.producer import EventProducer
from streams.kafka.reader import Record, TopicReader
from streams.model.effects import timer_effects
from streams.settings import Settings
from tests.support.quiescence import read_to_end, wait_committed

T0 = 1_700_000_000_000
MIN = 60_000
GROUP_WAIT = 30_000  # routing.yaml's group_wait for sources that do not group (prometheus)


def worker_env(tmp_path: Path) -> dict[str, str]:
    """Event-time timers, a fast ticker, an ack secret, the sinks' ledger in the test's directory.

    No receiver secrets are set: the sinks in the worker dead-letter what they cannot
    deliver, which is not what these tests look at (they read outbox).
    """
    return {
        "OPSLOOP_TIMER_CLOCK": "event",
        "OPSLOOP_TIMER_TICK_S": "0.2",
        "OPSLOOP_ACK_SECRET": "scenario-secret-key",
        "OPSLOOP_ACK_BASE_URL": "https://opsloop.test/ack",
        "OPSLOOP_DECIDE_BATCH_WITHIN_S": "0.05",
        "OPSLOOP_SINK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
    }


def runbooks_with_schedules_enabled(tmp_path: Path) -> Path:
    """A copy of the starter runbooks whose schedules are enabled (the starter set ships them disabled)."""
    import shutil

    from streams.settings import ROOT

    target = tmp_path / "runbooks"
    shutil.copytree(ROOT / "runbooks", target)
    schedules = target / "schedules.yaml"
    text = schedules.read_text()
    assert "enabled: false" in text
    schedules.write_text(text.replace("enabled: false", "enabled: true"))
    return target


_RULES: dict[str, Any] = {}


def rule(name: str):
    if not _RULES:
        _RULES.update({r.name: r for r in load_rules()})
    return _RULES[name]


def alert(
    rule_name: str,
    *,
    service: str,
    instance: str,
    at: int,
    status: str = "firing",
    source: str = "prometheus",
    eid: str | None = None,
) -> dict[str, Any]:
    """A real catalogue rule as the event ingest makes of it, in the session ingest would pick."""
    event = rule_to_event(rule(rule_name), org="acme", occurred_at=at, instance=instance, status=status, source=source)
    event["labels"]["service"] = service
    event["session_key"] = f"acme:alert:{event['labels']['alertname']}:{service}"
    event["session_rule"] = "alert-group"
    event["payload"]["fingerprint"] = f"{event['payload']['fingerprint']}-{service}"
    if eid:
        event["event_id"] = eid
    return event


def same_partition(session: str, candidates: Iterable[str], partitions: int) -> str:
    """The first of ``candidates`` whose key lands on ``session``'s partition."""
    want = partition_for_key(session.encode(), partitions)
    return next(k for k in candidates if partition_for_key(k.encode(), partitions) == want)


def sentinel_alert(beside: str, due: int, partitions: int, rule_name: str = "Host clock skew") -> dict[str, Any]:
    """The first alert of a new session on ``beside``'s partition, whose group flush is due at ``due``.

    Push it once event time on that partition has reached ``due`` and send that session
    nothing else: its timer is then already due, so only the ticker can fire it (decide
    folds a session's due timers inline only when an event of that session comes).
    """
    prefix = f"acme:alert:{alert_name(rule_name)}:"
    key = same_partition(beside, (f"{prefix}sentinel-{due}-{i}" for i in range(10_000)), partitions)
    return alert(
        rule_name,
        service=key.removeprefix(prefix),
        instance="sentinel-1:9100",
        at=due - GROUP_WAIT,
        eid=f"sentinel:{beside}:{due}",
    )


def tick(session: str, at: int) -> dict[str, Any]:
    return {
        "event_id": f"tick:{session}:{at}",
        "session_key": session,
        "kind": "telemetry",
        "type": "heartbeat",
        "source": "test",
        "org": "acme",
        "occurred_at": at,
        "labels": {},
        "annotations": {},
        "payload": None,
    }


def webhook(
    etype: str, session: str, at: int, *, source: str = "ingest", actor: str = "alice", body_json: str = "{}"
) -> dict[str, Any]:
    return {
        "event_id": f"{etype}:{session}:{at}",
        "session_key": session,
        "kind": "webhook",
        "type": etype,
        "source": source,
        "org": "acme",
        "occurred_at": at,
        "labels": {},
        "annotations": {},
        "payload": {
            "provider": source,
            "action": etype.rsplit(".", 1)[-1],
            "subject": session,
            "actor": actor,
            "body_json": body_json,
        },
    }


class Topics:
    """Reads outbox and decisions from the beginning, keeping what was read (no consumer group)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.records: list[Record] = []
        self._reader: TopicReader | None = None

    async def __aenter__(self) -> Topics:
        self._reader = TopicReader(self.settings, ["outbox", "decisions"], from_beginning=True)
        await self._reader.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._reader is not None
        await self._reader.__aexit__(*exc)

    async def push(self, events: Iterable[dict[str, Any]]) -> None:
        async with EventProducer(self.settings) as producer:
            await producer.send_many(list(events))

    async def until(self, condition: Callable[[Topics], bool], timeout: float = 60.0, what: str = "") -> None:
        assert self._reader is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition(self):
            if loop.time() > deadline:
                import json as _json
                import os as _os

                if _os.environ.get("SCENARIO_DEBUG"):
                    with open(_os.environ["SCENARIO_DEBUG"], "w") as fh:
                        _json.dump({"decisions": self.decisions(), "effects": self.effects()}, fh, default=str)
                raise TimeoutError(
                    f"{what or 'condition'} not met within {timeout:.0f}s "
                    f"({len(self.decisions())} decisions, {len(self.effects())} effects read)"
                )
            batch = await self._reader._consumer.getmany(timeout_ms=200, max_records=5000)  # noqa: SLF001
            for msgs in batch.values():
                for msg in msgs:
                    self.records.append(self._reader._decode(msg))  # noqa: SLF001

    @property
    def partitions(self) -> int:
        return by_name(load_catalogue(self.settings.topics_file))[EVENT_TOPICS[0]].partitions

    async def quiescent(self, timeout: float = 60.0, what: str = "") -> None:
        """Until decide is done: the worker's group committed to the end of every event topic (every
        event decided, its effects and decision records acknowledged), then outbox and decisions read
        to their end. A negative assertion made after this sees every record decide produced.

        (The sinks' commits on outbox are not waited for: these tests read outbox, and a claim a
        SIGKILLed worker left in the delivery ledger holds its partition back for the whole lease.)
        """
        assert self._reader is not None
        await wait_committed(self.settings, EVENT_TOPICS, timeout, what or "the pipeline quiescent")
        reader = self._reader
        await read_to_end(reader._consumer, lambda msg: self.records.append(reader._decode(msg)), timeout)  # noqa: SLF001

    async def ticker_passed(self, sentinel: dict[str, Any], timeout: float = 60.0, what: str = "") -> None:
        """Until the ticker fired ``sentinel``'s timer (see :func:`sentinel_alert`) and the pipeline is quiescent:
        every timer that was due when the sentinel was scheduled has then been promoted, decided and read."""
        session = sentinel["session_key"]
        await self.until(
            lambda t: t.decided([sentinel["event_id"]]) and t.timer_decided(session),
            timeout,
            what or f"the sentinel timer of {session}",
        )
        await self.quiescent(timeout, what)

    async def settled(self, beside: str, watermark: int, timeout: float = 60.0, what: str = "") -> dict[str, Any]:
        """Nothing left in flight: quiescent, then a sentinel timer due at ``watermark`` (event time
        ``beside``'s partition has reached) fired by the ticker, then quiescent again; so even a timer
        the last events made due has been promoted and decided. Returns the sentinel alert."""
        await self.quiescent(timeout, what)
        sentinel = sentinel_alert(beside, watermark, self.partitions)
        await self.push([sentinel])
        await self.ticker_passed(sentinel, timeout, what)
        return sentinel

    def timer_decided(self, session: str) -> bool:
        return any(d["session_key"] == session and d["kind"] == "timer" for d in self.decisions())

    def decisions(self) -> list[dict[str, Any]]:
        return [r.value for r in self.records if r.topic == "decisions" and r.value]

    def effects(self) -> list[dict[str, Any]]:
        """Every effect read: those on outbox and the timer effects the decisions carry (streams/model/effects.py)."""
        out: list[dict[str, Any]] = []
        for r in self.records:
            if r.value and r.topic == "outbox":
                out.append(r.value)
            elif r.value and r.topic == "decisions":
                out += timer_effects(r.value)
        return out

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
