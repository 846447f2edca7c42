"""Micro-benchmark: ingest's CPU per alert for copies (the same alerts posted again), the code before and now. Printed.

Run: PYTHONPATH=. .venv/bin/python -m tests.ingest.bench_resend [--alerts 20000] [--rounds 5]

A retried post, an Alertmanager webhook sending its group's alerts again, or a producer
posting the same alert (labels, startsAt, endsAt) again carries an id ingest accepted
already; in E2E, whose posts carry no endsAt, four posts in five do. (Prometheus's own
re-sends move endsAt: new events, which only the remembered fingerprint makes cheaper.) The workload is E2E's (``opsloop bench``'s Zipf events as the
alerts Prometheus would post, 64 a post). Per round, for each side, this thread's CPU per
alert to parse the posts (:func:`prometheus_events`) and finish each event
(:meth:`Ingest.finish`), once as new alerts (``first``) and once as re-sends (their ids
accepted: ``again``). The baseline is the code before 2026-12-07, kept below: ``finish``
encoded every event, and the fingerprint was computed for every alert. Both sides in one
process, interleaved, alternating which goes first. Nothing is published (no broker).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from typing import Any

from streams.devtools.bench.feed import alert_of
from streams.devtools.bench.workload import zipf_events
from streams.ingest import alerts as alerts_module
from streams.ingest.pipeline import Ingest
from streams.ingest.publisher import Ready
from streams.ingest.scopes import DEFAULT_SCOPE, Principal
from streams.ingest.sessions import load_session_rules
from streams.settings import Settings

PRINCIPAL = Principal("prometheus", "token", DEFAULT_SCOPE)
POST = 64


class IngestBefore(Ingest):
    """The baseline: every event encoded in ``finish``, re-send or not."""

    def finish(self, raw: Any, path: str = "", *, principal: Principal) -> Ready:
        return self.with_value(super().finish(raw, path, principal=principal))


def uncached_fingerprint(labels: Any) -> str:
    return alerts_module._fnv(tuple(sorted(labels.items())))  # noqa: SLF001 - the baseline


def posts(n: int) -> list[list[dict[str, Any]]]:
    now = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    bodies = [alert_of(ev, now) for ev in zipf_events(n)]
    return [bodies[i : i + POST] for i in range(0, len(bodies), POST)]


def per_alert_us(ingest: Ingest, bodies: list[list[dict[str, Any]]], n: int) -> float:
    t = time.thread_time()
    for body in bodies:
        for i, event in enumerate(prometheus_events(body, ingest)):
            ingest.finish(event, f"alerts[{i}]", principal=PRINCIPAL)
    return (time.thread_time() - t) / n * 1e6


def prometheus_events(body: list[dict[str, Any]], ingest: Ingest) -> list[dict[str, Any]]:
    return alerts_module.prometheus_events(body, org="default", received_at=0, rules=ingest.rules)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = Settings.from_env()
    rules = load_session_rules(settings.sessions_path())
    bodies = posts(args.alerts)
    distinct = len({alerts_module.fingerprint(a["labels"]) for body in bodies for a in body})

    def make(cls: type[Ingest]) -> Ingest:
        return cls(settings, settings.ingest, None, {}, rules, None)  # type: ignore[arg-type]  # no auth, no publisher

    sides = {"before": IngestBefore, "now": Ingest}
    figures: dict[str, dict[str, list[float]]] = {name: {"first": [], "again": []} for name in sides}
    print(f"{args.alerts} alerts ({distinct} distinct label sets), {POST} a post, parse and finish, µs of CPU each")
    for r in range(args.rounds):
        for name in sides if r % 2 == 0 else reversed(list(sides)):
            alerts_module._remembered.cache_clear()  # noqa: SLF001 - each side starts cold
            saved = alerts_module.fingerprint
            if name == "before":
                alerts_module.fingerprint = uncached_fingerprint  # type: ignore[assignment]
            try:
                ingest = make(sides[name])
                figures[name]["first"].append(per_alert_us(ingest, bodies, args.alerts))
                for body in bodies:  # accepted: what the publisher's acknowledgement does
                    for event in prometheus_events(body, ingest):
                        ingest.recent.add(event["event_id"])
                figures[name]["again"].append(per_alert_us(ingest, bodies, args.alerts))
            finally:
                alerts_module.fingerprint = saved
        print(
            f"round {r + 1}: "
            + "; ".join(f"{n}: first {f['first'][-1]:,.1f}, again {f['again'][-1]:,.1f}" for n, f in figures.items()),
            flush=True,
        )
    for name, f in figures.items():
        print(
            f"{name}: first post median {statistics.median(f['first']):,.1f} µs per alert "
            f"({min(f['first']):,.1f}–{max(f['first']):,.1f}), re-sent {statistics.median(f['again']):,.1f} "
            f"({min(f['again']):,.1f}–{max(f['again']):,.1f})"
        )


if __name__ == "__main__":
    main()
