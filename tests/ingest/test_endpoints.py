"""Every endpoint of a real ``opsloop ingest`` process, into the real broker's topics."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from streams.ingest.alerts import fingerprint, prometheus_events
from streams.ingest.app import create_app
from streams.ingest.idempotency import RecentIds
from streams.ingest.pipeline import INGEST
from streams.ingest.scopes import DEFAULT_SCOPE, Principal
from streams.model.records import derived_id
from streams.settings import IngestSettings
from tests.ingest.conftest import (
    GITHUB_SECRET,
    PAGERDUTY_SECRET,
    TOKENS,
    IngestServer,
    bearer,
    github_signature,
    pagerduty_signature,
    read_all_events,
    read_events,
    settings_for,
)

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent / "fixtures"


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def firing_alert(name: str, **labels: str) -> dict:
    now = datetime.now(UTC)
    return {
        "labels": {"alertname": name, "instance": "web-1:9100", **labels},
        "annotations": {"summary": f"{name} on web-1"},
        "startsAt": iso(now - timedelta(minutes=3)),
        "endsAt": iso(now + timedelta(minutes=4)),
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
    }


def signed_github(body: bytes, delivery: str) -> dict[str, str]:
    return {
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": github_signature(body),
        "Content-Type": "application/json",
    }


def test_every_endpoint_lands_decoded_in_its_topic_keyed_by_session(ingest_server, module_settings, http):
    tag = uuid.uuid4().hex[:6]
    answers = {}
    alert = firing_alert(f"Prom{tag}", service="checkout")
    answers["prometheus"] = http.post(ingest_server.url("/api/v2/alerts"), json=[alert], headers=bearer("prometheus"))
    am_body = json.loads((FIXTURES / "alertmanager_v4.json").read_text())
    am_body["alerts"][0]["labels"]["alertname"] = f"Am{tag}"
    am_body["alerts"][1]["labels"]["alertname"] = f"Am{tag}"
    answers["alertmanager"] = http.post(
        ingest_server.url("/ingest/alertmanager?org=globex"), json=am_body, headers=bearer("alertmanager")
    )
    pr = (
        (FIXTURES / "github_pull_request_opened.json").read_bytes().replace(b'"acme/api"', f'"acme/api-{tag}"'.encode())
    )
    answers["github"] = http.post(
        ingest_server.url("/ingest/webhook/github"), content=pr, headers=signed_github(pr, f"gh-{tag}")
    )
    pd = (
        (FIXTURES / "pagerduty_incident_acknowledged.json")
        .read_bytes()
        .replace(b"01BZ6PN0Q3UWWW0HBXTY41EOFZ", f"pd-{tag}".encode())
    )
    answers["pagerduty"] = http.post(
        ingest_server.url("/ingest/webhook/pagerduty"),
        content=pd,
        headers={"X-PagerDuty-Signature": pagerduty_signature(pd), "Content-Type": "application/json"},
    )
    scan = {
        "scan_id": f"run-{tag}",
        "scan_type": "drift",
        "config_id": f"vpc-{tag}",
        "findings": [{"resource": "aws_security_group.web", "change_type": "modified", "severity": "high"}],
    }
    answers["scan"] = http.post(ingest_server.url("/ingest/scan"), json=scan, headers=bearer("scanner"))
    generic = {
        "kind": "telemetry",
        "type": "metric.sample",
        "source": "cli",
        "occurred_at": 1_714_557_600_000,
        "labels": {"alertname": f"Gen{tag}", "service": "billing"},
        "payload": {"metric": "queue_depth", "value": 12.5},
    }
    answers["events"] = http.post(
        ingest_server.url("/ingest/events"), json=generic, headers={**bearer("scanner"), "Idempotency-Key": f"k-{tag}"}
    )

    for name, answer in answers.items():
        assert answer.status_code == 200, (name, answer.text)
        assert answer.json()["status"] == "accepted", (name, answer.json())
    ids = {name: answer.json()["event_ids"] for name, answer in answers.items()}
    assert len(ids["alertmanager"]) == 2
    wanted = {i for group in ids.values() for i in group}
    records = read_events(module_settings, lambda rs: wanted <= {r.value["event_id"] for r in rs if r.value})
    by_id = {r.value["event_id"]: r for r in records if r.value and r.value["event_id"] in wanted}
    assert len(by_id) == len(wanted) == 7

    def one(name, i=0):
        record = by_id[ids[name][i]]
        assert record.key.decode() == record.value["session_key"]  # keyed by session: one partition per session
        return record

    prom = one("prometheus")
    assert (
        prom.topic == "events.telemetry"
        and prom.value["type"] == "alert.firing"
        and prom.value["source"] == "prometheus"
    )
    assert prom.value["session_key"] == f"acme:alert:Prom{tag}:checkout" and prom.value["session_rule"] == "alert-group"
    assert prom.value["payload"]["fingerprint"] == fingerprint(alert["labels"])
    firing, resolved = one("alertmanager", 0), one("alertmanager", 1)
    assert (firing.value["type"], resolved.value["type"]) == ("alert.firing", "alert.resolved")
    assert firing.value["org"] == "globex" and firing.value["session_key"] == f"globex:alert:Am{tag}:web-1:9100"
    gh = one("github")
    assert gh.topic == "events.webhook" and gh.value["type"] == "pr.opened"
    assert gh.value["session_key"] == f"acme:pr:acme/api-{tag}#12" and gh.value["payload"]["delivery_id"] == f"gh-{tag}"
    page = one("pagerduty")
    assert page.topic == "events.webhook" and page.value["type"] == "incident.acknowledged"
    assert page.value["session_key"] == "acme:alert:HostHighCpuLoad:checkout"
    sc = one("scan")
    assert sc.topic == "events.scan" and sc.value["session_key"] == f"acme:scan:vpc-{tag}"
    assert sc.value["payload"]["findings"][0]["resource"] == "aws_security_group.web"
    gen = one("events")
    assert gen.topic == "events.telemetry" and gen.value["event_id"] == derived_id("client", "acme", f"k-{tag}")
    assert gen.value["session_key"] == f"acme:alert:Gen{tag}:billing" and gen.value["payload"]["value"] == 12.5
    assert all(r.value["received_at"] >= r.timestamp - 60_000 for r in by_id.values())


def test_a_retried_post_is_a_duplicate_and_is_written_once(ingest_server, module_settings):
    alert = firing_alert(f"Retry{uuid.uuid4().hex[:6]}")

    async def post_concurrently(n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *[
                    client.post(ingest_server.url("/api/v2/alerts"), json=[alert], headers=bearer("prometheus"))
                    for _ in range(n)
                ]
            )

    answers = asyncio.run(post_concurrently(6))
    later = httpx.post(
        ingest_server.url("/api/v2/alerts"),
        json=[{**alert, "endsAt": alert["endsAt"][:-1] + "+00:00"}],
        headers=bearer("prometheus"),
    )
    statuses = sorted(a.json()["status"] for a in [*answers, later])
    assert [a.status_code for a in answers] == [200] * 6 and later.status_code == 200
    assert statuses == ["accepted"] + ["duplicate"] * 6
    event_id = later.json()["event_ids"][0]
    assert {a.json()["event_ids"][0] for a in answers} == {event_id}
    read_events(module_settings, lambda rs: any(r.value and r.value["event_id"] == event_id for r in rs))
    records = read_all_events(module_settings, idle=1.0)  # everything, until a second passes with nothing new
    assert sum(1 for r in records if r.value and r.value["event_id"] == event_id) == 1
    metrics = httpx.get(ingest_server.url("/metrics")).text
    assert 'opsloop_ingest_events_total{endpoint="prometheus",outcome="duplicate"}' in metrics


def test_ids_are_deterministic_across_an_ingest_restart(module_env, module_settings, tmp_path):
    """A fresh process has no duplicate memory, but the retry carries the same event id, which decide skips."""
    server = IngestServer(module_env, tmp_path / "ingest.log").start()
    try:
        alert = firing_alert(f"Restart{uuid.uuid4().hex[:6]}")
        first = httpx.post(server.url("/api/v2/alerts"), json=[alert], headers=bearer("prometheus"), timeout=30)
        server.restart()
        second = httpx.post(server.url("/api/v2/alerts"), json=[alert], headers=bearer("prometheus"), timeout=30)
    finally:
        server.stop()
    assert first.json()["status"] == second.json()["status"] == "accepted"
    assert first.json()["event_ids"] == second.json()["event_ids"]


def test_healthz_and_readyz(ingest_server, http):
    assert http.get(ingest_server.url("/healthz")).json() == {"status": "alive"}
    ready = http.get(ingest_server.url("/readyz"))
    assert ready.status_code == 200 and ready.json()["kafka"] == "ok" and "missing_topics" not in ready.json()


def _in_process(module_env: dict[str, str], prefix: str | None = None, **config: object):
    env = {**module_env, **({"OPSLOOP_TOPIC_PREFIX": prefix} if prefix else {})}
    tokens = ",".join(f"{k}={v}" for k, v in TOKENS.items())
    # The webhook secrets come from env's OPSLOOP_INGEST_WEBHOOK_SECRET_GITHUB / _PAGERDUTY (see ingest_env).
    return create_app(settings_for(env), IngestSettings(tokens=tokens, **config), environ=env)


def test_a_resend_of_an_accepted_alert_is_not_encoded_again_and_one_forgotten_is_published_again(
    module_env, module_settings
):
    """A copy of an accepted alert (a retry, an Alertmanager webhook's group sent again) is answered ``duplicate``
    without being encoded (a quarter of ingest's CPU when four posts in five were copies), even when its
    annotations changed (the id is the labels' fingerprint, startsAt and endsAt). An id forgotten between the check and the publish
    is encoded and published (decide skips an id its session has seen)."""
    tag = uuid.uuid4().hex[:6]
    alerts = [firing_alert(f"Resend{tag}", shard=str(i)) for i in range(3)]
    app = _in_process(module_env)
    ingest = app[INGEST]
    encodes: list[str] = []
    encode = ingest.codec.encode

    def counting(name: str, record: dict) -> bytes:
        encodes.append(record["event_id"])
        return encode(name, record)

    ingest.codec = SimpleNamespace(encode=counting)

    async def run() -> list[dict]:
        async with TestClient(TestServer(app)) as client:
            first = await client.post("/api/v2/alerts", json=alerts, headers=bearer("prometheus"))
            changed = {**alerts[0], "annotations": {"summary": "the value moved"}}
            again = await client.post(
                "/api/v2/alerts", json=[changed, *alerts[1:], firing_alert(f"New{tag}")], headers=bearer("prometheus")
            )
            answers = [await first.json(), await again.json()]
            forgotten = ingest.finish(
                prometheus_events(alerts[:1], org=ingest.config.default_org, received_at=0, rules=ingest.rules)[0],
                principal=Principal("prometheus", "token", DEFAULT_SCOPE),
            )
            assert forgotten.value is None  # accepted before: not encoded
            ingest.recent = RecentIds(10, 60.0)  # ... and then forgotten (age, capacity) before the publish
            answers.append(json.loads((await ingest.accept([forgotten], "prometheus")).body))
            return answers

    first, again, late = asyncio.run(run())
    assert (first["accepted"], first["duplicates"]) == (3, 0)
    assert (again["accepted"], again["duplicates"]) == (1, 3) and again["event_ids"][:3] == first["event_ids"]
    assert late["status"] == "accepted"
    assert encodes == [*first["event_ids"], again["event_ids"][3], first["event_ids"][0]]
    records = read_events(
        module_settings, lambda rs: sum(r.value["event_id"] == first["event_ids"][0] for r in rs if r.value) >= 2
    )
    assert sum(1 for r in records if r.value and r.value["event_id"] == first["event_ids"][0]) == 2


def test_readyz_names_missing_topics_and_a_post_is_refused_at_once(module_env):
    async def run():
        async with TestClient(TestServer(_in_process(module_env, prefix=f"absent{uuid.uuid4().hex[:6]}."))) as client:
            answer = await client.get("/readyz")
            post = await client.post(
                "/api/v2/alerts", json=[firing_alert("NoTopics")] * 3, headers=bearer("prometheus")
            )
            return answer.status, await answer.json(), post.status, await post.json()

    status, body, post_status, post_body = asyncio.run(run())
    # no topics: 503 naming the topic (was: "Kafka did not acknowledge within 10s", after waiting that long)
    assert post_status == 503 and "events.telemetry' does not exist" in post_body["error"], post_body
    assert status == 503 and body["kafka"] == "ok"
    assert sorted(t.split(".", 1)[1] for t in body["missing_topics"]) == [
        "events.scan",
        "events.telemetry",
        "events.timer",
        "events.webhook",
    ]


def test_tokens_and_secrets_never_reach_the_logs(module_env, ingest_server, caplog):
    """Every kind of post, at DEBUG for every logger (aiohttp, aiokafka, ours), then grep."""
    caplog.set_level(logging.DEBUG)
    pr = (FIXTURES / "github_pull_request_opened.json").read_bytes()
    pd = (FIXTURES / "pagerduty_incident_acknowledged.json").read_bytes()

    async def run():
        async with TestClient(TestServer(_in_process(module_env))) as client:
            posts = [
                client.post("/api/v2/alerts", json=[firing_alert("Logs")], headers=bearer("prometheus")),
                client.post(
                    "/api/v2/alerts",
                    json=[firing_alert("Logs")],
                    headers={"Authorization": f"Bearer {TOKENS['prometheus']}x"},
                ),
                client.post(
                    "/ingest/alertmanager", json={"version": "4", "alerts": []}, headers=bearer("alertmanager")
                ),
                client.post(
                    "/ingest/scan",
                    data=b'{"scan_type": ',
                    headers={**bearer("scanner"), "Content-Type": "application/json"},
                ),
                client.post("/ingest/webhook/github", data=pr, headers=signed_github(pr, f"log-{uuid.uuid4().hex}")),
                client.post("/ingest/webhook/github", data=pr + b" ", headers=signed_github(pr, "log-2")),
                client.post(
                    "/ingest/webhook/pagerduty",
                    data=pd,
                    headers={"X-PagerDuty-Signature": pagerduty_signature(pd), "Content-Type": "application/json"},
                ),
                client.post(
                    "/ingest/webhook/pagerduty",
                    data=pd,
                    headers={
                        "X-PagerDuty-Signature": pagerduty_signature(pd + b"x"),
                        "Content-Type": "application/json",
                    },
                ),
                client.get("/metrics"),
            ]
            return [(await post).status for post in posts]

    assert asyncio.run(run()) == [200, 403, 400, 400, 200, 403, 200, 403, 200]
    assert "POST /api/v2/alerts" in caplog.text  # the logs were captured at all
    signatures = [github_signature(pr).split("=", 1)[1], pagerduty_signature(pd).split("=", 1)[1]]
    for secret in [*TOKENS.values(), GITHUB_SECRET, PAGERDUTY_SECRET, *signatures]:
        assert secret not in caplog.text
        assert secret not in ingest_server.log()  # the module's server process, after the other tests' posts


def test_a_post_with_a_long_description_and_a_long_service_is_accepted_whole(ingest_server, module_settings, http):
    """Prometheus drops a whole post answered 4xx. One alert's 5,000-character description (an annotation: cut, with
    a marker) or a 600-character service (a label: kept, its session key bounded) refused all 64 of its post."""
    tag = uuid.uuid4().hex[:6]
    long_text = firing_alert(f"Long{tag}")
    long_text["annotations"]["description"] = "d" * 5000
    long_service = firing_alert(f"Wide{tag}", service="s" * 600)
    answer = http.post(
        ingest_server.url("/api/v2/alerts"),
        json=[long_text, long_service, firing_alert(f"Plain{tag}")],
        headers=bearer("prometheus"),
    )
    assert answer.status_code == 200, answer.text
    ids = answer.json()["event_ids"]
    assert answer.json()["accepted"] == 3
    records = read_events(module_settings, lambda rs: {r.value["event_id"] for r in rs if r.value} >= set(ids))
    events = {r.value["event_id"]: r.value for r in records if r.value}
    description = events[ids[0]]["annotations"]["description"]
    assert len(description) == 4096 and description.endswith("(cut from 5000 characters)")
    assert events[ids[1]]["labels"]["service"] == "s" * 600 and len(events[ids[1]]["session_key"]) == 512


def test_one_bad_alert_refuses_itself_not_its_post(ingest_server, module_settings, http):
    """Prometheus and Alertmanager do not retry a 4xx: a post refused whole for one bad alert lost every other
    alert in it. Now the valid ones are taken and a 400 names the others, as Alertmanager's own API does."""
    tag = uuid.uuid4().hex[:6]
    bad_time = {**firing_alert(f"BadTime{tag}"), "startsAt": "yesterday"}
    bad_labels = {**firing_alert(f"BadLabels{tag}"), "labels": {"alertname": 5}}
    good = [firing_alert(f"Good{tag}", shard=str(i)) for i in range(2)]
    answer = http.post(
        ingest_server.url("/api/v2/alerts"), json=[good[0], bad_time, good[1], bad_labels], headers=bearer("prometheus")
    )
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["refused"] == [
        "alerts[1].startsAt: not an RFC 3339 timestamp: 'yesterday'",
        "alerts[3].labels: expected a mapping of strings",
    ]
    assert body["error"] == body["refused"][0] + " (and 1 more alerts refused)"
    assert body["accepted"] == 2 and len(body["event_ids"]) == 2

    am_body = json.loads((FIXTURES / "alertmanager_v4.json").read_text())
    am_body["alerts"] = [
        {**am_body["alerts"][0], "labels": {**am_body["alerts"][0]["labels"], "alertname": f"AmGood{tag}"}},
        {**am_body["alerts"][0], "status": "pending"},
    ]
    am = http.post(ingest_server.url("/ingest/alertmanager"), json=am_body, headers=bearer("alertmanager"))
    assert am.status_code == 400 and am.json()["refused"] == [
        "alerts[1].status: expected 'firing' or 'resolved', got 'pending'"
    ]
    ids = set(body["event_ids"]) | set(am.json()["event_ids"])
    assert len(ids) == 3
    records = read_events(module_settings, lambda rs: {r.value["event_id"] for r in rs if r.value} >= ids)
    names = {r.value["labels"]["alertname"] for r in records if r.value and r.value["event_id"] in ids}
    assert names == {f"Good{tag}", f"AmGood{tag}"}

    only_bad = http.post(ingest_server.url("/api/v2/alerts"), json=[bad_time], headers=bearer("prometheus"))
    assert only_bad.status_code == 400  # nothing valid: refused whole, as before
    assert only_bad.json() == {"error": "alerts[0].startsAt: not an RFC 3339 timestamp: 'yesterday'"}


def test_grafanas_webhook_lands_as_its_alerts(ingest_server, module_settings, http):
    """Grafana alerting's webhook contact point (version "1", orgId) to /ingest/alertmanager: was a 400."""
    tag = uuid.uuid4().hex[:6]
    body = {
        "receiver": "opsloop",
        "status": "firing",
        "orgId": 1,
        "version": "1",
        "groupKey": "{}:{}",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": f"Graf{tag}", "service": "mem"},
                "annotations": {"summary": "high memory"},
                "startsAt": "2024-05-01T11:51:03.157076+02:00",
                "endsAt": "0001-01-01T00:00:00Z",
                "panelURL": "https://grafana.example.org/d/mem?viewPanel=2",
                "values": {"B": 44.2},
            }
        ],
    }
    answer = http.post(ingest_server.url("/ingest/alertmanager"), json=body, headers=bearer("alertmanager"))
    assert answer.status_code == 200, answer.text
    (eid,) = answer.json()["event_ids"]
    records = read_events(module_settings, lambda rs: any(r.value and r.value["event_id"] == eid for r in rs))
    event = next(r.value for r in records if r.value and r.value["event_id"] == eid)
    assert (event["source"], event["type"], event["session_key"]) == (
        "grafana",
        "alert.firing",
        f"acme:alert:Graf{tag}:mem",
    )
    assert event["annotations"]["dashboard_url"] == "https://grafana.example.org/d/mem?viewPanel=2"
