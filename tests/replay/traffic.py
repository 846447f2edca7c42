"""Recorded traffic for the replay tests: alerts that repeat, get acknowledged, resolve and fire again.

Every session has its own ``service`` label, so no alert of one session inhibits
another's (see streams/replay/compare.py on global tables). The source is not an
upstream grouper, so the first notice of each episode waits for a group timer, and
availability alerts escalate through timers: the recorded run has timer events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from streams.kafka.reader import Record, TopicReader
from streams.settings import Settings
from tests.decide.helpers import alert, webhook

MIN = 60_000
NAMES = (
    "PrometheusTargetMissing",
    "HostHighCpuLoad",
    "HostOutOfDiskSpace",
    "PostgresqlDown",
    "HostOutOfMemory",
    "KubernetesPodCrashLooping",
)


def traffic(
    sessions: int,
    cycles: int,
    *,
    t0: int | None = None,
    acks: bool = True,
    resolves: bool = True,
    repeats: int = 8,
    gap_ms: int = MIN,
) -> list[dict[str, Any]]:
    """Events of ``sessions`` sessions in event-time order (t0 in the past, so timers come due)."""
    t0 = t0 if t0 is not None else int(time.time() * 1000) - 6 * 3_600_000
    out = []
    for s in range(sessions):
        name, service = NAMES[s % len(NAMES)], f"svc-{s}"
        session = f"acme:alert:{name}:{service}"
        instance = f"{service}-1:9100"
        for c in range(cycles):
            base = t0 + s * 1000 + c * 20 * MIN
            for r in range(repeats + 1):
                out.append(alert(name, at=base + r * gap_ms, instance=instance, service=service, session=session))
            if acks and s % 2 == 0:
                out.append(webhook("ack", at=base + 3 * MIN + 500, session=session, actor=f"oncall-{s}"))
            if resolves:
                out.append(
                    alert(
                        name,
                        status="resolved",
                        at=base + (repeats + 2) * gap_ms,
                        instance=instance,
                        service=service,
                        session=session,
                    )
                )
    out.sort(key=lambda e: e["occurred_at"])
    return out


def wait_decided(
    settings: Settings, event_ids: set[str], *, quiet_s: float = 4.0, timeout: float = 90, at_least: int | None = None
) -> list[Record]:
    """Decisions (and outbox effects) once every event id is decided (or ``at_least`` decisions)
    and no new decision came for ``quiet_s`` (the timers have settled)."""

    async def read() -> list[Record]:
        state: dict[str, Any] = {"n": -1, "since": time.monotonic(), "seen": 0, "missing": set()}

        def done(records: list[Record]) -> bool:
            decisions = [r for r in records if r.topic == "decisions" and r.value]
            state["seen"] = len(decisions)
            if at_least is not None:
                return len(decisions) >= at_least
            if len(decisions) != state["n"]:
                state["n"], state["since"] = len(decisions), time.monotonic()
                return False
            decided = {r.value["event_id"] for r in decisions}
            state["missing"] = event_ids - decided
            return not state["missing"] and time.monotonic() - state["since"] >= quiet_s

        async with TopicReader(settings, ["decisions", "outbox"]) as reader:
            try:
                return await reader.collect(done, timeout=timeout)
            except TimeoutError:
                missing = sorted(state["missing"])
                raise AssertionError(
                    f"after {timeout}s {state['seen']} decisions; {len(missing)} events undecided, e.g. {missing[:5]}"
                ) from None

    return asyncio.run(read())


def produce(settings: Settings, events: list[dict[str, Any]]) -> None:
    from streams.kafka.producer import EventProducer

    async def run() -> None:
        async with EventProducer(settings) as producer:
            for i in range(0, len(events), 500):
                await producer.send_many(events[i : i + 500])

    asyncio.run(run())


def read_recorded(settings: Settings, since: int, until: int):
    from streams.replay.run import read_recorded as read

    return asyncio.run(read(settings, since, until))


Check = Callable[[], bool]
