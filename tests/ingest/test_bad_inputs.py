"""The bad-input table: every refusal a producer can get, against a real ``opsloop ingest``.

Each row is a request and the status it must get. After every row the server must
still answer /healthz promptly (nothing crashes or stalls it), and at the end the
event topics must hold exactly one record: the valid control post sent last, which
also proves the reader would have seen anything the bad rows had produced.
The observed table is printed (``pytest -s``) in Markdown for the README.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from streams.devtools.broker import free_port
from tests.ingest.conftest import (
    IngestServer,
    apply_topics,
    bearer,
    github_signature,
    ingest_env,
    pagerduty_signature,
    read_all_events,
    read_events,
    settings_for,
)

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent / "fixtures"
LIMIT = 1024 * 1024
ALERT = {"labels": {"alertname": "TableProbe", "instance": "web-1:9100"}, "startsAt": "2024-05-01T09:50:00Z"}
PR = (FIXTURES / "github_pull_request_opened.json").read_bytes()
PD = (FIXTURES / "pagerduty_incident_acknowledged.json").read_bytes()
JSON_CT = {"Content-Type": "application/json"}
GH = {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "table-1", **JSON_CT}


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[httpx.Client, str], httpx.Response]  # (client, base url) → response
    status: int
    reason: str  # a substring of the error the client is told


def post(path: str, **kwargs) -> Callable[[httpx.Client, str], httpx.Response]:
    return lambda client, base: client.post(base + path, **kwargs)


def chunks(size: int) -> Iterator[bytes]:
    sent = 0
    while sent < size:
        n = min(65536, size - sent)
        sent += n
        yield b" " * n


AM = json.loads((FIXTURES / "alertmanager_v4.json").read_text())
AM_NO_STARTS = {**AM, "alerts": [{k: v for k, v in AM["alerts"][0].items() if k != "startsAt"}]}

CASES = [
    Case("no auth", post("/api/v2/alerts", json=[ALERT]), 401, "missing bearer token"),
    Case(
        "a token with a byte that is not UTF-8",
        post("/api/v2/alerts", json=[ALERT], headers={"Authorization": b"Bearer \xe9t\xe9-token-0123456789"}),
        403,
        "invalid token",
    ),
    Case(
        "wrong auth scheme (Basic)",
        post("/api/v2/alerts", json=[ALERT], headers={"Authorization": "Basic dTpw"}),
        401,
        "expected Authorization: Bearer",
    ),
    Case(
        "wrong token",
        post("/api/v2/alerts", json=[ALERT], headers={"Authorization": "Bearer not-a-token"}),
        403,
        "invalid token",
    ),
    Case(
        "webhook without a signature",
        post("/ingest/webhook/github", content=PR, headers=GH),
        401,
        "missing signature header",
    ),
    Case(
        "bad HMAC (wrong secret)",
        post(
            "/ingest/webhook/github", content=PR, headers={**GH, "X-Hub-Signature-256": github_signature(PR, "wrong")}
        ),
        403,
        "does not match",
    ),
    Case(
        "HMAC of a different body",
        post("/ingest/webhook/github", content=PR, headers={**GH, "X-Hub-Signature-256": github_signature(PR + b"\n")}),
        403,
        "does not match",
    ),
    Case(
        "webhook signature with bytes that are not UTF-8",
        post("/ingest/webhook/github", content=PR, headers={**GH, "X-Hub-Signature-256": b"sha256=" + b"\xe9" * 64}),
        403,
        "does not match",
    ),
    Case(
        "PagerDuty HMAC of a different body",
        post(
            "/ingest/webhook/pagerduty",
            content=PD,
            headers={"X-PagerDuty-Signature": pagerduty_signature(b"{}"), **JSON_CT},
        ),
        403,
        "does not match",
    ),
    Case(
        "truncated JSON",
        post("/api/v2/alerts", content=json.dumps([ALERT]).encode()[:40], headers={**bearer(), **JSON_CT}),
        400,
        "body: invalid JSON",
    ),
    Case(
        "empty body",
        post("/ingest/alertmanager", content=b"", headers={**bearer("alertmanager"), **JSON_CT}),
        400,
        "body: empty",
    ),
    Case(
        "wrong types: label values not strings",
        post("/api/v2/alerts", json=[{"labels": {"alertname": "X", "port": 9100}}], headers=bearer()),
        400,
        "alerts[0].labels: expected a mapping of strings",
    ),
    Case(
        "wrong types: startsAt a number",
        post("/api/v2/alerts", json=[{**ALERT, "startsAt": 1714557000}], headers=bearer()),
        400,
        "alerts[0].startsAt: expected an RFC 3339 timestamp",
    ),
    Case(
        "wrong types: body an object, not an array",
        post("/api/v2/alerts", json=ALERT, headers=bearer()),
        400,
        "alerts: expected an array",
    ),
    Case(
        "missing required field: alert startsAt (Alertmanager)",
        post("/ingest/alertmanager", json=AM_NO_STARTS, headers=bearer("alertmanager")),
        400,
        "alerts[0].startsAt: required",
    ),
    Case(
        "missing required field: scan config_id",
        post("/ingest/scan", json={"scan_id": "s", "scan_type": "drift"}, headers=bearer("scanner")),
        400,
        "config_id: required",
    ),
    Case(
        "missing required field: event type",
        post(
            "/ingest/events",
            json={"kind": "scan", "source": "x", "occurred_at": 1, "session_key": "acme:k"},
            headers=bearer("scanner"),
        ),
        400,
        "type: required",
    ),
    Case(
        # no session key and nothing to derive one from: the envelope's own error is named, not session_key
        "missing required field: event type, no session key given",
        post("/ingest/events", json={"kind": "webhook", "source": "x", "occurred_at": 1}, headers=bearer("scanner")),
        400,
        "type: required",
    ),
    Case(
        "empty label name, no session key given",
        post(
            "/ingest/events",
            json={"kind": "webhook", "type": "t", "source": "x", "occurred_at": 1, "labels": {"": "v"}},
            headers=bearer("scanner"),
        ),
        400,
        "labels: a label name is empty",
    ),
    Case(
        "missing required header: X-GitHub-Delivery",
        post(
            "/ingest/webhook/github",
            content=PR,
            headers={"X-GitHub-Event": "pull_request", "X-Hub-Signature-256": github_signature(PR), **JSON_CT},
        ),
        400,
        "X-GitHub-Delivery: required",
    ),
    Case("empty alerts array (Prometheus)", post("/api/v2/alerts", json=[], headers=bearer()), 400, "alerts: empty"),
    Case(
        "empty alerts array (Alertmanager)",
        post("/ingest/alertmanager", json={**AM, "alerts": []}, headers=bearer("alertmanager")),
        400,
        "alerts: empty",
    ),
    Case(
        "Alertmanager payload version 3",
        post("/ingest/alertmanager", json={**AM, "version": "3"}, headers=bearer("alertmanager")),
        400,
        'version: expected "4"',
    ),
    Case(
        "unknown event kind",
        post(
            "/ingest/events",
            json={"kind": "metrics", "type": "t", "source": "s", "occurred_at": 1},
            headers=bearer("scanner"),
        ),
        400,
        "kind: unknown kind 'metrics'",
    ),
    Case(
        "payload field of the wrong type",
        post(
            "/ingest/events",
            json={
                "kind": "telemetry",
                "type": "t",
                "source": "s",
                "occurred_at": 1,
                "session_key": "acme:k",
                "payload": {"value": "high"},
            },
            headers=bearer("scanner"),
        ),
        400,
        "payload.value: expected a number or null",
    ),
    Case(
        "oversized body (Content-Length 1 MiB + 1)",
        post("/api/v2/alerts", content=b" " * (LIMIT + 1), headers=bearer()),
        413,
        "exceeds the limit",
    ),
    Case(
        "oversized chunked body (no Content-Length)",
        post("/api/v2/alerts", content=chunks(LIMIT + 1), headers={**bearer(), **JSON_CT}),
        413,
        "exceeds the limit",
    ),
    Case(
        "unknown webhook provider",
        post("/ingest/webhook/gitlab", content=b"{}", headers={"X-Hub-Signature-256": "sha256=00"}),
        404,
        "unknown webhook provider 'gitlab'",
    ),
    Case("unknown path", post("/ingest/metrics", json={}), 404, "Not Found"),
    Case(
        "wrong method (GET a POST endpoint)",
        lambda client, base: client.get(base + "/ingest/alertmanager"),
        405,
        "Method Not Allowed",
    ),
    Case(
        "more events than the in-flight budget (3)",
        post(
            "/api/v2/alerts",
            json=[{**ALERT, "labels": {**ALERT["labels"], "instance": f"web-{i}:9100"}} for i in range(4)],
            headers=bearer(),
        ),
        429,
        "exceed the limit of 3",
    ),
]

BROKER_DOWN = Case("broker down", post("/api/v2/alerts", json=[ALERT], headers=bearer()), 503, "retry later")


@pytest.fixture(scope="module")
def module_env(kafka_bootstrap: str) -> dict[str, str]:
    env = ingest_env(kafka_bootstrap, f"bad{uuid.uuid4().hex[:8]}.", OPSLOOP_INGEST_MAX_IN_FLIGHT="3")
    apply_topics(settings_for(env))
    return env


def run_case(case: Case, server: IngestServer, client: httpx.Client) -> dict:
    try:
        answer = case.send(client, server.base)
    except httpx.TransportError as exc:  # a refusal must be an answer, never a dropped connection
        pytest.fail(f"{case.name}: no HTTP answer ({exc!r})")
    started = time.monotonic()
    health = client.get(server.url("/healthz"), timeout=2)
    assert health.status_code == 200 and time.monotonic() - started < 2, f"{case.name}: server stalled"
    body = answer.json()
    return {
        "case": case,
        "status": answer.status_code,
        "error": body.get("error", ""),
        "retry_after": answer.headers.get("Retry-After"),
    }


def test_bad_inputs_are_refused_with_the_reason_and_produce_nothing(
    ingest_server, module_env, module_settings, tmp_path, capsys
):
    dead_env = {**module_env, "KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "OPSLOOP_INGEST_SEND_TIMEOUT_S": "2"}
    down = IngestServer(dead_env, tmp_path / "ingest-broker-down.log").start()
    rows = []
    try:
        with httpx.Client(timeout=30) as client:
            rows = [run_case(case, ingest_server, client) for case in CASES]
            rows.append(run_case(BROKER_DOWN, down, client))
            ready = client.get(down.url("/readyz"))
            control = client.post(
                ingest_server.url("/api/v2/alerts"),
                json=[{**ALERT, "labels": {**ALERT["labels"], "control": "yes"}}],
                headers=bearer(),
            )
    finally:
        down.stop()

    with capsys.disabled():
        print("\n| input | status | reason |\n| --- | --- | --- |")
        for row in rows:
            reason = row["error"] + (f" (Retry-After: {row['retry_after']})" if row["retry_after"] else "")
            print(f"| {row['case'].name} | {row['status']} | {reason.replace('|', '/')} |")

    for row in rows:
        case = row["case"]
        assert row["status"] == case.status, f"{case.name}: got {row['status']} {row['error']!r}"
        assert case.reason in row["error"], f"{case.name}: {row['error']!r}"
        if case.status in (429, 503):
            assert row["retry_after"] and int(row["retry_after"]) > 0, case.name
    assert ready.status_code == 503 and "unreachable" in ready.json()["kafka"]
    assert ingest_server.alive and control.status_code == 200
    control_id = control.json()["event_ids"][0]
    read_events(module_settings, lambda rs: any(r.value and r.value["event_id"] == control_id for r in rs))
    records = read_all_events(module_settings, idle=1.5)
    assert [r.value["event_id"] for r in records] == [control_id], "a refused post produced a record"
