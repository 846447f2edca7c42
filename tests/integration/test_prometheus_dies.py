"""Real Prometheus killed while its alert fires: the session resolves at ``endsAt`` and the
PagerDuty resolve carries the same ``dedup_key`` (issue 14).

Debian's real ``prometheus`` (evaluation every 1 s, ``--rules.alert.resend-delay=2s``)
pushes an always-firing critical alert to a real ``opsloop ingest``; a real ``opsloop
worker`` pages a local PagerDuty fake (tests/sinks/fakes.py) at once (a test runbooks dir:
``severity="urgent"`` routes to ``pagerduty-primary`` with ``group_wait: 0s``). Prometheus
re-sends the alert every 2 s with ``endsAt`` moved on (4 × the resend delay ahead); once it
is SIGKILLed nothing says "resolved", so only decide's ``ends:`` timer
(``streams.core.decide._track_ends_at``) can end the incident, at the last ``endsAt``.

The timer clock is the default ``hybrid``: every re-send carries the same ``occurred_at``
(the alert's ``startsAt``), so event time alone (``event``) would stand still after the
kill and the timer would never fire; once the partition has been idle for 2 s the ticker
judges it by the wall clock, which is what a dead sender needs.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from streams.devtools import childproc
from streams.devtools.broker import free_port
from streams.kafka.catalogue import EVENT_TOPICS
from streams.kafka.reader import Record, TopicReader
from streams.settings import Settings
from tests.ingest.conftest import TOKENS, IngestServer, ingest_env, read_events
from tests.sinks.conftest import SECRETS
from tests.sinks.fakes import FakeServices, Received
from tests.support.quiescence import read_to_end, wait_committed

pytestmark = pytest.mark.integration

ALERT = "OpsloopPrometheusDies"
SESSION = f"acme:alert:{ALERT}:dies-test"
PD = "pd-dies"
RESEND_S = 2

RULES = f"""\
groups:
  - name: opsloop-prometheus-dies
    interval: 1s
    rules:
      - alert: {ALERT}
        expr: vector(1)
        labels: {{severity: critical, service: dies-test}}
        annotations: {{summary: "fires until Prometheus dies"}}
"""


@pytest.fixture
def pagerduty() -> Iterator[FakeServices]:
    services = FakeServices().start()
    yield services
    services.stop()


def runbooks_dir(tmp_path: Path, pagerduty: FakeServices) -> Path:
    """Routing that pages at once: urgent → pagerduty-primary (the PagerDuty fake), no group wait."""
    d = tmp_path / "runbooks"
    d.mkdir()
    (d / "routing.yaml").write_text(
        textwrap.dedent(f"""\
        receivers:
          - name: pagerduty-primary
            channel: pagerduty
            settings: {{url: "{pagerduty.url("pagerduty", PD)}", source: opsloop}}
            secrets: {{routing_key: OPSLOOP_PAGERDUTY_ROUTING_KEY}}
            rate_limit: none
          - name: log
            channel: log
        route:
          receiver: log
          group_wait: 0s
          routes:
            - matchers: ['severity="urgent"']
              receiver: pagerduty-primary
        """)
    )
    (d / "default.yaml").write_text("name: default\npriority: -1000\nsteps:\n  - notify: route\n")
    return d


def prometheus_config(tmp_path: Path, ingest_port: int) -> Path:
    (tmp_path / "rules.yml").write_text(RULES)
    path = tmp_path / "prometheus.yml"
    path.write_text(
        textwrap.dedent(f"""\
        global:
          evaluation_interval: 1s
        rule_files: [{tmp_path / "rules.yml"}]
        alerting:
          alertmanagers:
            - static_configs: [{{targets: ["127.0.0.1:{ingest_port}"]}}]
              timeout: 5s
              authorization: {{type: Bearer, credentials: "{TOKENS["prometheus"]}"}}
        """)
    )
    return path


def wait_for_page(pagerduty: FakeServices, action: str, timeout: float) -> Received:
    """The first request to the PagerDuty fake with this event_action (polled, with a deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in pagerduty.got("pagerduty", PD):
            if r.json and r.json.get("event_action") == action:
                return r
        time.sleep(0.1)
    seen = [(r.json or {}).get("event_action") for r in pagerduty.got("pagerduty", PD)]
    raise TimeoutError(f"no PagerDuty {action} within {timeout:.0f}s (got {seen})")


def firing_of(records: list[Record]) -> list[dict]:
    """The firing pushes of the test's alert, in the order they were written (one partition: the session's)."""
    return [
        r.value
        for r in records
        if r.value and r.value["session_key"] == SESSION and r.value["payload"]["status"] == "firing"
    ]


def read_all(settings: Settings, topics: list[str]) -> list[Record]:
    """Every record of ``topics`` up to their end offsets as of now."""

    async def run() -> list[Record]:
        out: list[Record] = []
        async with TopicReader(settings, topics) as reader:
            consumer = reader._consumer  # noqa: SLF001 - TopicReader has no "to the end" read
            await read_to_end(consumer, lambda msg: out.append(reader._decode(msg)))  # noqa: SLF001
        return out

    return asyncio.run(run())


def test_killed_prometheus_alert_resolves_at_ends_at_with_the_same_dedup_key(
    topics: Settings, opsloop_env, worker_factory, daemons, pagerduty: FakeServices, tmp_path: Path
) -> None:
    settings = topics
    server = IngestServer(
        {**ingest_env(opsloop_env["KAFKA_BOOTSTRAP"], opsloop_env["OPSLOOP_TOPIC_PREFIX"]), **opsloop_env},
        tmp_path / "ingest.log",
    ).start()
    try:
        worker_factory(
            OPSLOOP_RUNBOOKS_DIR=str(runbooks_dir(tmp_path, pagerduty)),
            OPSLOOP_PAGERDUTY_ROUTING_KEY=SECRETS["OPSLOOP_TEST_PD_KEY"],
            OPSLOOP_TIMER_CLOCK="hybrid",  # the default, said out loud: see the module doc
            OPSLOOP_TIMER_TICK_S="0.2",
            OPSLOOP_DECIDE_BATCH_WITHIN_S="0.05",
            OPSLOOP_SINK_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
            OPSLOOP_SINK_BACKOFF_BASE_S="0.05",
        )
        port = free_port()
        prometheus = daemons.start(
            [
                "prometheus",
                f"--config.file={prometheus_config(tmp_path, server.port)}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--rules.alert.resend-delay={RESEND_S}s",
            ],
            tmp_path / "prometheus.log",
            f"http://127.0.0.1:{port}/-/ready",
        )

        trigger = wait_for_page(pagerduty, "trigger", timeout=60)
        # Let Prometheus re-send a few times first, so the end is the last endsAt, not the first one.
        read_events(settings, lambda rs: len(firing_of(rs)) >= 3, timeout=30, topics=["events.telemetry"])
        assert (
            httpx.get(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=5).json()["data"]["alerts"][0]["state"]
            == "firing"
        )
        childproc.kill(prometheus.proc)  # SIGKILL: no resolved notification, no goodbye
        killed_wall_ms = int(time.time() * 1000)

        resolve = wait_for_page(pagerduty, "resolve", timeout=4 * RESEND_S + 20)  # endsAt is 4 resend delays ahead
    finally:
        server.stop()
    clock_offset_ms = time.time() * 1000 - time.monotonic() * 1000  # the fake stamps arrivals with monotonic()
    resolve_wall_ms = resolve.at * 1000 + clock_offset_ms

    # Same incident: PagerDuty resolves what it was paged for.
    assert trigger.errors == [] and resolve.errors == [] and trigger.answered == resolve.answered == 202
    assert trigger.json["dedup_key"] == resolve.json["dedup_key"] == SESSION
    assert trigger.json["payload"]["severity"] == "critical"
    assert trigger.json["routing_key"] == resolve.json["routing_key"] == SECRETS["OPSLOOP_TEST_PD_KEY"]

    # Not before the last endsAt Prometheus promised, and because of it (not some later timer).
    telemetry = read_all(settings, ["events.telemetry"])
    firing = firing_of(telemetry)
    assert len(firing) >= 3
    assert not [r for r in telemetry if r.value["payload"]["status"] == "resolved"], (
        "a dead Prometheus resolves nothing"
    )
    last_ends_at = firing[-1]["payload"]["ends_at"]
    assert last_ends_at == max(e["payload"]["ends_at"] for e in firing) > firing[0]["payload"]["ends_at"]
    assert last_ends_at > killed_wall_ms, "its endsAt was still ahead when Prometheus died"
    assert resolve_wall_ms >= last_ends_at
    assert resolve_wall_ms < last_ends_at + 10_000, "resolved at endsAt, not much later"

    # Nothing more to come: the group has handled every event and effect; then count the pages.
    asyncio.run(wait_committed(settings, (*EVENT_TOPICS, "outbox"), timeout=30, what="worker done"))
    records = read_all(settings, ["decisions", "outbox", "events.timer"])
    pages = pagerduty.got("pagerduty", PD)
    assert [p.json["event_action"] for p in pages] == ["trigger", "resolve"]
    [ended] = [
        r.value
        for r in records
        if r.topic == "decisions" and r.value["type"] == "timer.fired" and r.value["outcome"] == "resolved"
    ]
    assert ended["session_key"] == SESSION
    assert ended["matched"]["ended"] == "endsAt passed without a re-send"
    assert ended["matched"]["timer"].startswith("ends:")
    [fired] = [r.value for r in records if r.topic == "events.timer" and r.value["event_id"] == ended["event_id"]]
    assert fired["payload"]["due_at"] == fired["occurred_at"] == last_ends_at, "the end is the last endsAt"
    notices = [r.value for r in records if r.topic == "outbox" and r.value["type"] == "notify"]
    assert [(n["notify"]["receiver"], n["notify"]["action"]) for n in notices] == [
        ("pagerduty-primary", "trigger"),
        ("pagerduty-primary", "resolve"),
    ]
    assert notices[1]["event_id"] == ended["event_id"]
