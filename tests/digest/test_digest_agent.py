"""Must show: a digest for a day with known traffic shows the right counts, on a running worker.

A real ``opsloop worker`` on the real broker decides known traffic of day D for three
orgs (two get a digest, in Berlin and New York time; one is not configured), delivery
receipts of that day go to ``deliveries``, then event time moves past each org's hour
on D+1 (ticks: ordinary events whose ``occurred_at`` is the clock, as in the decide
scenarios). The digest notify effects in ``outbox`` carry exactly the counts of the
decisions the worker recorded for D in each org's local day, go to the receiver the
routing tree names for them, and are sent once: a restarted worker (the table restored
from its changelog), later ticks and the next day's digest do not send D's again, and
the next day's counts are right across the restart.

D lies a year ahead of the wall clock: the worker's sinks deliver the traffic's own
notifications and stamp those receipts with the wall clock, which then falls on a day
that is not D (and behind the event-time clock), whatever day the test runs.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from streams.core.digest import DigestCounts, day_of, digest_effect, render
from streams.kafka.batchsend import partition_for_key
from streams.kafka.catalogue import by_name, load_catalogue
from streams.kafka.producer import EventProducer
from tests.decide.scenario import MIN, Topics, alert, tick, worker_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ORGS = {"acme": ("Europe/Berlin", 6), "globex": ("America/New_York", 8)}  # initech: traffic, no digest
DIGEST_YAML = """default: {enabled: false}
digests:
  - {org: acme, hour: 6, timezone: Europe/Berlin}
  - {org: globex, hour: 8, timezone: America/New_York}
  - {org: %(sentinel)s, hour: %(sentinel_hour)d, timezone: Asia/Kolkata}
"""
KOLKATA = "Asia/Kolkata"  # half an hour off Berlin: its hour turns between acme's 06:01 and 06:30
# acme's digests go to Teams; everything else (the traffic's own notifications, globex's
# digest) to the built-in log receiver.
ROUTING_YAML = """receivers:
  - {name: ops-teams, channel: teams, secrets: {webhook_url: OPSLOOP_TEST_TEAMS_WEBHOOK}}
route:
  receiver: log
  routes:
    - matchers: ['category="digest"', 'org="acme"']
      receiver: ops-teams
"""
EXPECTED_RECEIVER = {"acme": ("ops-teams", "teams"), "globex": ("log", "log")}


def local_ms(day: date, hour: int, minute: int, tz: str, days: int = 0) -> int:
    d = day + timedelta(days=days)
    return int(datetime(d.year, d.month, d.day, hour, minute, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def org_event(event: dict, org: str) -> dict:
    """An event of ``org`` (the scenario builders make acme's)."""
    return {**event, "org": org, "session_key": org + event["session_key"][len("acme") :]}


def episode(org: str, name: str, service: str, at: int, repeats: int, eid: str) -> list[dict]:
    """A firing alert re-sent ``repeats`` times a minute apart, then resolved (its timers cancelled)."""
    firing = [
        org_event(
            alert(
                name,
                service=service,
                instance=f"{service}-1:9100",
                at=at + r * MIN,
                source="alertmanager",
                eid=f"{eid}-{r}",
            ),
            org,
        )
        for r in range(repeats + 1)
    ]
    resolved = org_event(
        alert(
            name,
            service=service,
            instance=f"{service}-1:9100",
            at=at + 10 * MIN,
            source="alertmanager",
            status="resolved",
            eid=f"{eid}-resolved",
        ),
        org,
    )
    return firing + [resolved]


def beat(org: str, at: int) -> dict:
    return {**org_event(tick("acme:heartbeat", at), org), "event_id": f"tick:{org}:heartbeat:{at}"}


def traffic(d: date) -> list[dict]:
    berlin, new_york = ORGS["acme"][0], ORGS["globex"][0]
    cpu = episode("acme", "Host high CPU load", "api", local_ms(d, 9, 0, berlin), 3, "acme-cpu")
    return [
        beat("acme", local_ms(d, 0, 10, berlin)),  # 23:10 UTC the day before: D in Berlin
        *cpu,
        cpu[1],  # re-sent: a duplicate, not an event
        *episode("acme", "Host out of memory", "web", local_ms(d, 10, 0, berlin), 0, "acme-mem"),
        beat("acme", local_ms(d, 0, 30, berlin, days=1)),  # 23:30 UTC on D: already D+1 in Berlin
        *episode("globex", "Host out of memory", "db", local_ms(d, 12, 0, new_york), 1, "globex-mem"),
        beat("globex", local_ms(d, 23, 30, new_york)),  # 04:30 UTC on D+1: still D in New York
        beat("initech", local_ms(d, 12, 0, new_york)),
    ]


def receipts(d: date) -> list[dict]:
    """Delivery receipts of day D as the sinks write them (keyed by effect id, no org field)."""
    at = {"acme": local_ms(d, 11, 0, ORGS["acme"][0]), "globex": local_ms(d, 11, 0, ORGS["globex"][0])}
    rows = [("acme", "slack", "delivered")] * 3 + [
        ("acme", "email", "delivered"),
        ("acme", "pagerduty", "failed"),
        ("acme", "teams", "dead"),
        ("acme", "slack", "skipped"),
        ("globex", "email", "delivered"),
        ("globex", "email", "delivered"),
        ("globex", "slack", "ambiguous"),
    ]
    out = [
        {
            "effect_id": f"e-{i}",
            "session_key": f"{org}:alert:x:y",
            "channel": channel,
            "receiver": channel,
            "status": status,
            "attempts": 1,
            "http_status": None,
            "latency_ms": 1.0,
            "error": None,
            "completed_at": at[org],
        }
        for i, (org, channel, status) in enumerate(rows)
    ]
    # a digest's own receipt is not counted
    out.append({**out[0], "effect_id": "e-digest", "session_key": "acme:digest"})
    return out


def expected(decisions: list[dict], deliveries: list[dict], org: str, d: date) -> DigestCounts:
    """The counts, tallied here from what the worker recorded (not with streams.core.digest's fold)."""
    tz = ORGS[org][0]
    mine = [x for x in decisions if x["org"] == org and day_of(x["decided_at"], tz) == d.isoformat()]
    real = [x for x in mine if x["outcome"] != "duplicate"]
    theirs = [r for r in deliveries if r["session_key"].startswith(f"{org}:alert:")]

    def by_channel(statuses: tuple[str, ...]) -> Counter:
        return Counter(r["channel"] for r in theirs if r["status"] in statuses)

    return DigestCounts(
        events=len(real),
        outcomes=Counter(x["outcome"] for x in mine),
        notifications=by_channel(("delivered",)),
        failures=by_channel(("failed", "ambiguous")),
        dead=by_channel(("dead",)),
        sessions=Counter(x["session_key"] for x in real),
    )


def digests(topics: Topics) -> list[dict]:
    """Every digest record in outbox, in the order read (a re-send would appear twice)."""
    return [e for e in topics.effects() if e["runbook"] == "digest"]


def sentinel_org(partitions: int) -> str:
    """An org whose digest.counts partition is acme's: the two share the partition's clock."""
    of = {org: partition_for_key(org.encode(), partitions) for org in ("acme", "globex")}
    assert of["acme"] != of["globex"], "the test needs acme's and globex's clocks apart"
    return next(
        f"sentinel-{i}" for i in range(1000) if partition_for_key(f"sentinel-{i}".encode(), partitions) == of["acme"]
    )


def runbooks_dir(tmp_path: Path, sentinel: str, sentinel_hour: int) -> Path:
    path = tmp_path / "runbooks"
    path.mkdir()
    shutil.copy(ROOT / "runbooks" / "default.yaml", path)
    (path / "routing.yaml").write_text(ROUTING_YAML)
    (path / "digest.yaml").write_text(DIGEST_YAML % {"sentinel": sentinel, "sentinel_hour": sentinel_hour})
    return path


def test_digest_for_a_day_with_known_traffic_has_the_right_counts_and_is_sent_once(topics, worker_factory, tmp_path):
    started = time.monotonic()
    d = date.today() + timedelta(days=365)
    day, next_day = d.isoformat(), (d + timedelta(days=1)).isoformat()
    berlin = ORGS["acme"][0]
    sentinel = sentinel_org(by_name(load_catalogue(topics.topics_file))["digest.counts"].partitions)
    # due once acme's partition clock reaches D+1 06:30 Berlin, not at 06:01
    sentinel_hour = datetime.fromtimestamp(local_ms(d, 6, 30, berlin, days=1) / 1000, ZoneInfo(KOLKATA)).hour
    assert datetime.fromtimestamp(local_ms(d, 6, 1, berlin, days=1) / 1000, ZoneInfo(KOLKATA)).hour < sentinel_hour
    env = {**worker_env(tmp_path), "OPSLOOP_RUNBOOKS_DIR": str(runbooks_dir(tmp_path, sentinel, sentinel_hour))}
    worker = worker_factory(**env)
    events = traffic(d) + [beat(sentinel, local_ms(d, 12, 0, KOLKATA))]
    sent_receipts = receipts(d)

    def digests_of(t: Topics, org: str, of_day: str) -> list[dict]:
        return [
            e for e in digests(t) if e["org"] == org and e["notify"]["title"] == f"Daily digest for {org}: {of_day}"
        ]

    async def scenario() -> None:
        async with Topics(topics) as t, EventProducer(topics) as producer:
            for r in sent_receipts:
                await producer.send_record("deliveries", r["effect_id"], "opsloop.Delivery", r)
            await t.push(events)
            await t.until(
                lambda t: t.decided(e["event_id"] for e in events) and len(t.decisions()) >= len(events),
                timeout=60,
                what="the day's traffic decided",
            )
            # past each org's hour on D+1, in event time
            await t.push(
                [
                    beat("acme", local_ms(d, 6, 1, berlin, days=1)),
                    beat("globex", local_ms(d, 8, 1, ORGS["globex"][0], days=1)),
                ]
            )
            await t.until(lambda t: all(digests_of(t, org, day) for org in ORGS), timeout=30, what="both digests")

            for org in ORGS:
                want = expected(t.decisions(), sent_receipts, org, d)
                (got,) = digests_of(t, org, day)
                receiver, channel = EXPECTED_RECEIVER[org]
                assert got == digest_effect(
                    org, day, want, channel=channel, receiver=receiver, created_at=got["created_at"]
                )
            acme = digests_of(t, "acme", day)[0]["notify"]
            # the known traffic, spelled out: 1 + 5 + 2 events in Berlin's D, the re-sent alert a duplicate
            assert acme["fields"] == {"events": "8", "notifications": "4", "failures": "1", "dead_letters": "1"}
            body = acme["body"].splitlines()
            assert "duplicate 1" in body[1] and body[2:5] == [
                "Notifications: email 1, slack 3",
                "Failed deliveries: pagerduty 1",
                "Dead letters: teams 1",
            ]
            assert body[body.index("Noisiest sessions:") + 1] == "- acme:alert:HostHighCpuLoad:api: 5 events"
            globex = digests_of(t, "globex", day)[0]["notify"]
            assert globex["fields"] == {"events": "4", "notifications": "2", "failures": "1", "dead_letters": "0"}
            assert not digests_of(t, sentinel, day)  # its hour has not come on acme's partition

            # A restarted worker (the table restored from its changelog, nothing in memory) folds
            # a later record of acme on D+1: its ticker judged acme's D again (the sentinel's
            # digest, due by the same record on the same partition, proves it ran) and did not
            # send it. Then D+2's hour: D+1's digests go out, D's still once.
            worker.stop()
            worker_factory(**env)
            await t.push([beat("acme", local_ms(d, 6, 30, berlin, days=1))])
            await t.until(lambda t: digests_of(t, sentinel, day), timeout=45, what="the sentinel's digest")
            await t.push(
                [beat("globex", local_ms(d, 8, 30, ORGS["globex"][0], days=1))]
                + [beat(org, local_ms(d, hour, 1, tz, days=2)) for org, (tz, hour) in ORGS.items()]
            )
            await t.until(
                lambda t: all(digests_of(t, org, next_day) for org in ORGS), timeout=30, what="the next day's digests"
            )
            titles = Counter((e["org"], e["notify"]["title"]) for e in digests(t))
            assert titles == Counter(
                {(org, f"Daily digest for {org}: {x}"): 1 for org in ORGS for x in (day, next_day)}
                | {(sentinel, f"Daily digest for {sentinel}: {day}"): 1}
            )
            for org in ORGS:  # counted once each across the restart (ticks only: 3 in Berlin, 2 in New York)
                (got,) = digests_of(t, org, next_day)
                want = expected(t.decisions(), [], org, d + timedelta(days=1))
                assert (
                    got["notify"]["body"] == render(org, next_day, want)[1]
                    and want.events == {"acme": 3, "globex": 2}[org]
                )
            assert not [x for x in t.decisions() if x["kind"] == "timer"]  # no timer raced the counts
            assert "initech" not in {e["org"] for e in digests(t)}  # traffic, but no digest configured

    asyncio.run(scenario())
    print(f"digest scenario: {time.monotonic() - started:.1f}s")
