"""The bench's input: real catalogue alerts, sessions Zipf-distributed over ~1,000 services.

Real alerts (the warning/critical rules of the awesome-prometheus-alerts catalogue,
rendered by ``classifier.dataset``) rather than synthetic ones, so the classifier,
the runbooks and the routing see what they see in production; Zipf sessions so a few
loud services and a long tail share the partitions as they do in a real fleet. Every
rung is fed the same list (same seed), so rungs compare like with like.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections.abc import Sequence
from typing import Any

from streams.devtools.bench.measure import Bar

T0 = 1_700_000_000_000


def zipf_events(
    n: int, *, services: int = 1_000, seed: int = 17, t0: int = T0, exponent: float = 1.1
) -> list[dict[str, Any]]:
    """N firing-alert events from the catalogue's rules, sessions Zipf-distributed over ``services``."""
    from classifier.dataset import load_rules, rule_to_event

    rng = random.Random(seed)
    rules = [r for r in load_rules() if r.severity in ("warning", "critical")]
    weights = [1.0 / (k**exponent) for k in range(1, services + 1)]
    names = [f"svc-{k:04d}" for k in range(services)]
    picks = rng.choices(range(services), weights=weights, k=n)
    events = []
    for i, s in enumerate(picks):
        rule = rules[(s * 7 + rng.randrange(3)) % len(rules)]  # a service fires a few alerts of its own
        ev = rule_to_event(
            rule, occurred_at=t0 + i * 10, instance=f"{names[s]}-{rng.randrange(3)}:9100", source="prometheus"
        )
        ev["labels"] = {**ev["labels"], "service": names[s]}
        ev["session_key"] = f"bench:{names[s]}:{rule.name}"
        events.append(ev)
    return events


def storm_events(n: int, *, seed: int = 29, t0: int = T0) -> list[dict[str, Any]]:
    """N firing alerts, each its own session (its own host): a storm that leaves N alerts firing.

    The flat-cost rung pre-loads one of these and then measures the usual workload on top:
    what a worker spends per event should not grow with the number of alerts already firing.
    """
    from classifier.dataset import load_rules, rule_to_event

    rng = random.Random(seed)
    rules = [r for r in load_rules() if r.severity in ("warning", "critical")]
    events = []
    for i in range(n):
        rule = rules[rng.randrange(len(rules))]
        host = f"storm-{i:06d}"
        ev = rule_to_event(rule, occurred_at=t0 + i, instance=f"{host}:9100", source="prometheus")
        ev["labels"] = {**ev["labels"], "service": host}
        ev["session_key"] = f"storm:{host}:{rule.name}"
        # The catalogue's ids hash rule and time, not the host: a storm alert at T0 + 10j ms would share its id
        # with the workload's j-th alert of the same rule, and the rung would time the storm's decision of it.
        ev["event_id"] = f"storm-{seed}-{i:06d}"
        events.append(ev)
    return events


def clock_ticks(at: int, n: int = 64) -> list[dict[str, Any]]:
    """N firing alerts of their own sessions at event time ``at``, spread over the partitions by their keys.

    With the event clock a partition's time moves only with the events it reads, so a storm's
    last timers (its group waits) would fire in whatever window reads the next events. The
    flat-cost rung sends these after the storm, past its group wait, so the storm's own
    notices fire and are delivered before the measured window.
    """
    events = storm_events(n, seed=31, t0=at)
    for i, ev in enumerate(events):
        ev["occurred_at"] = at
        ev["session_key"] = f"tick:{i:03d}:{ev['labels'].get('alertname', '')}"
        ev["labels"] = {**ev["labels"], "service": f"tick-{i:03d}"}
    return events


async def preload(settings: Any, events: Sequence[dict[str, Any]], progress: Bar) -> list[str]:
    """Append the events (acks=all, as ingest does); returns their event ids."""
    from streams.kafka.producer import EventProducer

    ids: list[str] = []
    async with EventProducer(settings) as producer:
        for i in range(0, len(events), 5_000):
            done = await producer.send_many(events[i : i + 5_000])
            ids.extend(ev["event_id"] for ev, _ in done)
            progress.update(len(ids))
    progress.done()
    return ids


Feed = list[tuple[str, str, bytes, bytes]]  # (event id, physical topic, key, value)


def feed_of(settings: Any, events: Sequence[dict[str, Any]]) -> Feed:
    """The events stamped (a fresh id, received now) and encoded as ingest appends them, ready to be sent."""
    from streams.kafka.codec import default_codec
    from streams.kafka.producer import prepare_event
    from streams.model.records import topic_for

    codec = default_codec()
    feed = []
    for raw in events:
        ev = prepare_event(raw)
        feed.append(
            (
                ev["event_id"],
                settings.topic_prefix + topic_for(ev),
                ev["session_key"].encode(),
                codec.encode("opsloop.Event", ev),
            )
        )
    return feed


async def paced(settings: Any, feed: Feed, rate: float) -> dict[str, int]:
    """Append the feed at a fixed ``rate`` per second (ticks of 10 ms, so no burst hides a backlog); returns each
    event id's produce time (ms, set as the record's timestamp): latency is measured from it."""
    from streams.kafka.producer import EventProducer

    sent: dict[str, int] = {}
    pending = []
    async with EventProducer(settings) as producer:
        start = time.monotonic()
        for i, (event_id, topic, key, value) in enumerate(feed):
            delay = start + i / rate - time.monotonic()
            if delay > 0.01:
                await asyncio.sleep(delay)
            ts = int(time.time() * 1000)
            sent[event_id] = ts
            pending.append(await producer.kafka.send(topic, value, key=key, timestamp_ms=ts))
        await asyncio.gather(*pending)
    return sent


def _paced_child(settings: Any, feed: Feed, rate: float, conn: Any) -> None:
    conn.send(asyncio.run(paced(settings, feed, rate)))
    conn.close()


class PacedFeed:
    """:func:`paced` in a process of its own.

    Why: run beside the reader that times the decisions, one loop did both, and while the
    reader decoded a burst of decisions the records just stamped waited in the producer's
    buffer: the load generator's own stalls counted as the worker's latency.
    """

    def __init__(self, settings: Any, feed: Feed, rate: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_paced_child, args=(settings, feed, rate, child), daemon=True)
        self._proc.start()
        child.close()

    def sent(self, timeout: float) -> dict[str, int]:
        """Each event id's produce time (ms), once the whole feed was acknowledged; raises TimeoutError."""
        if not self._conn.poll(timeout):
            self._proc.kill()
            raise TimeoutError(f"the paced feed did not finish in {timeout:.0f} s")
        sent: dict[str, int] = self._conn.recv()
        self._proc.join(timeout=10)
        return sent
