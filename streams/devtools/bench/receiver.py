"""The bench's webhook receiver: one kind for opsloop's sinks (L6, E2E) and for Alertmanager (L7, E2E).

Two modes, so both senders meet the same receiver in one run:

- ``prompt``: 200 at once;
- ``slow``: each request it accepts is answered after ``delay_s``; with ``limit`` requests
  already in flight it answers 503 at once (a receiver that sheds load).

A notification counts as *delivered* when the receiver accepts it (before the delay): a
slow receiver has the message even if the sender gives up before the answer, as a real
one would, and a sender that then sends it again has sent a duplicate. A 503 is not a
delivery. Each delivery is noted with its *identity*, what makes two deliveries the same
notification: opsloop's ``Idempotency-Key`` (the effect id), or for Alertmanager's
webhook its ``groupKey`` with the set of alerts it holds (Alertmanager re-sends a group
whose alert set changed: that is a new notification, not a duplicate; the same set sent
twice is). :func:`duplicates` counts identities delivered more than once. Each delivery
also names its *group*, the same on both sides (:func:`group_key`): opsloop's session key
for these alerts is ``{org}:alert:{alertname}:{service}``, which is Alertmanager's
``group_by: [org, alertname, service]`` written the same way.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from streams.devtools.broker import free_port

MODES = ("prompt", "slow")
AlertKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Delivery:
    at: float  # epoch seconds, when the receiver accepted it
    path: str
    identity: str
    group: str = ""
    alerts: tuple[AlertKey, ...] = ()  # Alertmanager: the label sets it holds
    created: float = 0.0  # opsloop: the effect's created_at (epoch s; a group flush's is its timer's due time)


def alert_key(labels: Mapping[str, str]) -> AlertKey:
    """An alert's identity in Alertmanager: its whole label set."""
    return tuple(sorted(labels.items()))


def group_key(labels: Mapping[str, str]) -> str:
    """The group an alert belongs to, as opsloop's session key writes it (runbooks/sessions.yaml, alert-group)."""
    return f"{labels.get('org') or 'default'}:alert:{labels.get('alertname', '')}:{labels.get('service', '')}"


def created_of(body: bytes) -> float:
    """An opsloop effect's ``created_at`` in epoch seconds (0: none)."""
    try:
        doc = json.loads(body)
        return float(doc.get("created_at") or 0) / 1000 if isinstance(doc, dict) else 0.0
    except (ValueError, TypeError):
        return 0.0


def identity_of(headers: Mapping[str, str], body: bytes) -> tuple[str, str, tuple[AlertKey, ...]]:
    """(identity, group, alerts) of one notification. The identity is the Idempotency-Key when there is one
    (opsloop; the group is the effect's session key), else Alertmanager's group key plus the alert set (by
    label set, order ignored; the group from its groupLabels)."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    key = headers.get("Idempotency-Key")
    if key:
        return key, str(doc.get("session_key", "")), ()
    alerts = tuple(alert_key(a.get("labels") or {}) for a in doc.get("alerts") or ())
    group = group_key(doc.get("groupLabels") or {}) if doc.get("groupLabels") else ""
    return json.dumps([doc.get("groupKey", ""), sorted(alerts)]), group, alerts


def duplicates(identities: Iterable[str]) -> int:
    """Deliveries of a notification beyond its first."""
    return sum(n - 1 for n in Counter(identities).values())


class WebhookReceiver:
    """aiohttp in a thread of its own (any path), noting each accepted delivery."""

    def __init__(self, mode: str = "prompt", *, delay_s: float = 0.5, limit: int = 8) -> None:
        if mode not in MODES:
            raise ValueError(f"receiver mode {mode!r}: one of {', '.join(MODES)}")
        self.mode, self.delay_s, self.limit = mode, delay_s, limit
        self.port = free_port()
        self.deliveries: list[Delivery] = []
        self.refused = 0  # 503s answered (slow mode)
        self.in_flight = 0
        self.peak = 0  # the most requests held at once (slow mode)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"bench-receiver-{mode}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            if self.mode == "slow" and self.in_flight >= self.limit:
                self.refused += 1
                return web.Response(status=503, text="busy")
            identity, group, alerts = identity_of(request.headers, body)
            created = created_of(body) if not alerts else 0.0
            self.deliveries.append(Delivery(time.time(), request.path, identity, group, alerts, created))
            if self.mode == "slow":
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
                try:
                    await asyncio.sleep(self.delay_s)
                finally:
                    self.in_flight -= 1
            return web.Response(text="ok")

        async def main() -> web.AppRunner:
            app = web.Application()
            app.router.add_post("/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            return runner

        asyncio.set_event_loop(self._loop)
        self._runner = self._loop.run_until_complete(main())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())

    def start(self) -> WebhookReceiver:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the bench's webhook receiver did not start in 10 s")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def last_at(self) -> float:
        return self.deliveries[-1].at if self.deliveries else 0.0

    def quiet_for(self, seconds: float, timeout: float) -> None:
        """Until no delivery came for ``seconds`` (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if time.time() - self.last_at() >= seconds:
                return
            time.sleep(0.25)

    def groups(self) -> set[str]:
        return {d.group for d in self.deliveries}

    def summary(self) -> dict[str, float]:
        """Notifications, their rate first to last, duplicates, 503s answered."""
        return summarise(self.deliveries, self.refused)


def summarise(deliveries: Sequence[Delivery], refused: int = 0) -> dict[str, float]:
    """Notifications, their rate first to last, duplicates (the same notification delivered again), groups
    notified, 503s answered."""
    times = [d.at for d in deliveries]
    span = max(times) - min(times) if times else 0.0
    return {
        "notifications": float(len(times)),
        "notifications /s (first to last)": len(times) / max(span, 1e-3) if times else 0.0,
        "duplicates": float(duplicates(d.identity for d in deliveries)),
        "groups notified": float(len({d.group for d in deliveries})),
        "503s answered": float(refused),
    }


def group_latencies(deliveries: Iterable[Delivery], posted: Mapping[str, float]) -> list[float]:
    """Per group, ms from its first alert's post to its first notification."""
    first: dict[str, float] = {}
    for d in deliveries:
        if d.group in posted and (d.group not in first or d.at < first[d.group]):
            first[d.group] = d.at
    return [1000 * (at - posted[g]) for g, at in first.items()]
