"""Posting the bench's events as Prometheus would: to Alertmanager (L7) or to ``opsloop ingest`` (E2E).

Both get the same requests: the events as alerts (labels plus ``org``), POSTed to
``/api/v2/alerts`` in batches of 64 (Prometheus's batch size), 4 posts at a time. An
alert keeps the ``startsAt`` of its first post, as Prometheus keeps it while the alert
fires, so a re-post is the same alert to both (Alertmanager merges it by label set,
ingest answers it ``duplicate`` by its derived event id).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.devtools.bench.measure import Bar, CpuWindow, latency_summary, percentile
from streams.devtools.bench.receiver import AlertKey, WebhookReceiver, alert_key, group_key
from streams.devtools.bench.report import BUSY_KEY, Level

BATCH = 64
PARALLEL = 4


def alert_of(event: Mapping[str, Any], starts_at: dt.datetime) -> dict[str, Any]:
    """An opsloop bench event as the alert Prometheus would have posted (its labels plus ``org``)."""
    return {
        "labels": {**event["labels"], "org": event.get("org") or "default"},
        "annotations": dict(event.get("annotations") or {}),
        "startsAt": starts_at.isoformat(),
        "generatorURL": (event.get("payload") or {}).get("generator_url") or "",
    }


@dataclass
class Fed:
    start: float = 0.0  # epoch s, the first post
    fed: float = 0.0  # the last post answered
    first_posted: dict[AlertKey, float] = field(default_factory=dict)  # per alert (label set)
    group_posted: dict[str, float] = field(default_factory=dict)  # per group, its first alert's post
    alerts: int = 0  # alerts posted (re-posts included)

    @property
    def seconds(self) -> float:
        return self.fed - self.start


async def feed(
    url: str, events: Sequence[Mapping[str, Any]], progress: Bar, headers: Mapping[str, str] | None = None
) -> Fed:
    """POST the events as alerts to ``url`` (…/api/v2/alerts); raises on an answer other than 2xx."""
    import aiohttp

    out = Fed()
    starts: dict[AlertKey, dt.datetime] = {}
    sem = asyncio.Semaphore(PARALLEL)
    posted = [0]
    async with aiohttp.ClientSession(headers=dict(headers or {})) as session:

        async def post(chunk: Sequence[Mapping[str, Any]]) -> None:
            async with sem:
                now = dt.datetime.now(dt.UTC)
                at = time.time()
                alerts = []
                for ev in chunk:
                    alert = alert_of(ev, now)
                    key = alert_key(alert["labels"])
                    alert["startsAt"] = starts.setdefault(key, now).isoformat()
                    out.first_posted.setdefault(key, at)
                    out.group_posted.setdefault(group_key(alert["labels"]), at)
                    alerts.append(alert)
                async with session.post(url, json=alerts) as resp:
                    if resp.status >= 300:
                        raise RuntimeError(f"{url} answered {resp.status}: {(await resp.text())[:500]}")
            posted[0] += len(alerts)
            out.alerts += len(alerts)
            progress.update(posted[0])

        out.start = time.time()
        await asyncio.gather(*(post(events[i : i + BATCH]) for i in range(0, len(events), BATCH)))
        out.fed = time.time()
    progress.done()
    return out


WARM_UP = {"alertname": "BenchWarmUp", "service": "bench-warm-up", "severity": "warning", "org": "default"}


async def warm_up(
    url: str, receiver: WebhookReceiver, timeout: float, headers: Mapping[str, str] | None = None
) -> float:
    """Post one alert of a group of its own and wait until the receiver has its notification: the whole path
    (a worker's table recovery, its timers, its sinks) is running before the measured feed, whose window would
    otherwise hold the start-up. Then the receiver forgets it. Returns the seconds it took."""
    import aiohttp

    start = time.monotonic()
    alert = {
        "labels": WARM_UP,
        "annotations": {"summary": "bench warm-up"},
        "startsAt": dt.datetime.now(dt.UTC).isoformat(),
    }
    async with aiohttp.ClientSession(headers=dict(headers or {})) as session:
        async with session.post(url, json=[alert]) as resp:
            if resp.status >= 300:
                raise RuntimeError(f"{url} answered {resp.status} to the warm-up: {(await resp.text())[:500]}")
    group = group_key(WARM_UP)
    while group not in receiver.groups():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"the warm-up alert was not notified in {timeout:.0f}s")
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)  # its stragglers (a second receiver of the same group) come and go
    receiver.deliveries.clear()
    receiver.refused = 0
    return time.monotonic() - start


def fed_level(
    name: str,
    fed: Fed,
    cpu: CpuWindow,
    receiver: WebhookReceiver,
    group_ms: Sequence[float],
    extra: Mapping[str, float],
) -> Level:
    """One side's figures, counted the same way for Alertmanager and opsloop: alerts/s in, the receiver's
    notifications, rate and duplicates, per-group latency (first post to first notification), CPU and RSS."""
    return Level(
        name,
        fed.alerts,
        fed.seconds,
        cpu.used,
        cpu.rss,
        latency=latency_summary(group_ms),
        extra={
            **receiver.summary(),
            "distinct alerts": float(len(fed.first_posted)),
            "groups posted": float(len(fed.group_posted)),
            "group latency p50 (ms)": percentile(group_ms, 50),
            "group latency p99 (ms)": percentile(group_ms, 99),
            **extra,
            BUSY_KEY: cpu.machine,
        },
        unit="alerts",
    )


def wait_delivered(receiver: WebhookReceiver, fed: Fed, quiet_s: float, timeout: float) -> bool:
    """Until every group posted was notified and no notification came for ``quiet_s`` (True; also when some
    group is never notified, after three times as long), or ``timeout`` (False). Blocking: the receiver runs in
    its own thread."""
    deadline = time.monotonic() + timeout
    groups = set(fed.group_posted)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        quiet = time.time() - max(receiver.last_at(), fed.fed)
        if quiet > quiet_s and (groups <= receiver.groups() or quiet > 3 * quiet_s):
            return True
    return False
