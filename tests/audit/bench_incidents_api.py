"""The read API's filtered incident list over 10,000 incidents, beside the same query on SQL directly.

    .venv/bin/python -m tests.audit.bench_incidents_api [--incidents 10000] [--requests 20]

Starts a throwaway PostgreSQL (or uses $DATABASE_URL, in a fresh schema it drops
after), migrates it, inserts N incidents (status, severity, service, team, org spread
over realistic values), serves ``streams.api`` on a local port and times, for each
filter, ``--requests`` GET requests over real HTTP (token check, query, JSON) after
two warm-ups, beside the same selection as one hand-written SQL statement run on the
same engine (on the merged ``labels``, one alert per incident: what the API's matching per alert costs
beside a single label set). Prints p50 / p95 in milliseconds. Nothing is asserted: the figures are
for the README and for spotting regressions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import sqlalchemy as sa
from aiohttp import web

from streams.api.app import create_app
from streams.api.auth import ApiAuth
from streams.audit.incidents import STATUSES
from streams.audit.models import IncidentRow
from streams.audit.store import migrate
from streams.db import make_engine

TOKEN = "bench-" + uuid.uuid4().hex
T0 = 1_700_000_000_000

# name, API query, the same selection in SQL
CASES: list[tuple[str, dict[str, str], str]] = [
    (
        'service=~"db.*",severity="urgent" status=firing (SQL narrows all)',
        {"filter": 'service=~"db.*",severity="urgent"', "status": "firing", "sort": "-last_seen", "limit": "50"},
        "SELECT * FROM incidents WHERE status = 'firing' AND severity = 'urgent' "
        "AND coalesce(labels->>'service', '') ~ '^(?:db.*)$' ORDER BY last_seen DESC, session_key DESC LIMIT 51",
    ),
    (
        'team="payments",service=~"db-[0-9]+" (GIN index and a regex, both in SQL)',
        {"filter": 'team="payments",service=~"db-[0-9]+"', "sort": "-last_seen", "limit": "50"},
        'SELECT * FROM incidents WHERE labels @> \'{"team": "payments"}\' '
        "AND coalesce(labels->>'service', '') ~ '^(?:db-[0-9]+)$' ORDER BY last_seen DESC, session_key DESC LIMIT 51",
    ),
    (
        'service=~"zz[a-z]" (a class: SQL narrows it, none match)',
        {"filter": 'service=~"zz[a-z]"', "sort": "-last_seen", "limit": "50"},
        "SELECT * FROM incidents WHERE coalesce(labels->>'service', '') ~ '^(?:zz[a-z])$' "
        "ORDER BY last_seen DESC, session_key DESC LIMIT 51",
    ),
    (
        'service=~"zz\\d" (worst case: an escape, Python checks all rows, none match)',
        {"filter": 'service=~"zz\\\\d"', "sort": "-last_seen", "limit": "50"},
        "SELECT * FROM incidents WHERE coalesce(labels->>'service', '') ~ '^(?:zz\\d)$' "
        "ORDER BY last_seen DESC, session_key DESC LIMIT 51",
    ),
]


@contextmanager
def database() -> Iterator[sa.Engine]:
    external = os.environ.get("DATABASE_URL")
    pg = None
    if external:
        base = external
    else:
        from tests.support.postgres import LocalPostgres

        pg = LocalPostgres().start()
        base = pg.url
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(base, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
        if pg is not None:
            pg.stop()


def incidents(n: int, seed: int = 15) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    services = [f"db-{i}" for i in range(8)] + ["dbproxy", "web", "api", "cache", "queue", "auth", "billing"]
    rows = []
    for i in range(n):
        first = T0 + rnd.randrange(0, 30 * 86_400_000)
        status = rnd.choices(STATUSES, weights=[3, 1, 1, 5])[0]
        rows.append(
            {
                "session_key": f"org{i % 5}:{rnd.choice(['db', 'cpu', 'disk', 'net'])}:{i}",
                "org": f"org{i % 5}",
                "status": status,
                "severity": rnd.choice(["urgent", "warning", "info"]),
                "category": rnd.choice(["database", "cpu", "disk", "network", "latency"]),
                "runbook": rnd.choice(["db-down", "high-cpu", "disk-full", ""]),
                "labels": {
                    "alertname": rnd.choice(["PgDown", "HighCpu", "DiskFull", "Latency"]),
                    "service": rnd.choice(services),
                    "team": rnd.choice(["payments", "data", "infra", "web"]),
                    "instance": f"host-{rnd.randrange(400)}:9100",
                },
                "first_seen": first,
                "last_seen": first + rnd.randrange(0, 86_400_000),
                "last_notified_at": first,
                "last_receivers": ["pager"],
                "acked_by": "alice" if status == "acknowledged" else None,
                "acked_at": first if status == "acknowledged" else None,
                "silenced_by": None,
                "last_outcome": "notified",
                "last_decision_id": f"dec-{i}",
            }
        )
    return rows


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    samples, result = [], None
    for _ in range(2):
        result = fn()
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples, result


async def time_api(engine: sa.Engine, runs: int) -> list[tuple[list[float], int]]:
    app = create_app(engine, ApiAuth({"bench": TOKEN}))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    out = []
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            for _, params, _ in CASES:
                url = f"http://127.0.0.1:{port}/api/v1/incidents?{urlencode(params, quote_via=quote)}"
                samples, count = [], 0
                for i in range(runs + 2):
                    start = time.perf_counter()
                    async with client.get(url) as response:
                        body = await response.json()
                    if response.status != 200:
                        raise SystemExit(f"{url}: {response.status} {body}")
                    if i >= 2:
                        samples.append((time.perf_counter() - start) * 1000)
                    count = len(body["incidents"])
                out.append((samples, count))
    finally:
        await runner.cleanup()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    with database() as engine:
        migrate(engine)
        rows = incidents(args.incidents)
        with engine.begin() as conn:
            for start in range(0, len(rows), 1000):
                conn.execute(sa.insert(IncidentRow), rows[start : start + 1000])
            conn.execute(sa.text("ANALYZE incidents"))
            # the projector writes each incident's alerts; these have one each
            conn.execute(sa.text("UPDATE incidents SET alerts = jsonb_build_array(labels)"))
            conn.execute(sa.text("ANALYZE incidents"))
        api = asyncio.run(time_api(engine, args.requests))

        def direct(sql: str) -> Callable[[], int]:
            def run() -> int:
                with engine.connect() as conn:
                    return len(conn.exec_driver_sql(sql).fetchall())

            return run

        print(f"{args.incidents} incidents in PostgreSQL; {args.requests} requests each, after 2 warm-ups (ms)")
        print(f"{'query':<70} {'path':<16} {'p50':>7} {'p95':>7} {'rows':>5}")
        for (name, _, sql), (api_samples, api_rows) in zip(CASES, api, strict=True):
            sql_samples, sql_rows = timed(direct(sql), args.requests)
            for path, samples, count in (
                ("API over HTTP", api_samples, api_rows),
                ("SQL directly", sql_samples, sql_rows),
            ):
                p50, p95 = percentiles(samples)
                print(f"{name:<70} {path:<16} {p50:>7.2f} {p95:>7.2f} {count:>5}")


if __name__ == "__main__":
    main()
