"""Scan results and the generic envelope, parsed: pure functions, no broker."""

from __future__ import annotations

import pytest

from streams.ingest.errors import BadRequest
from streams.ingest.events import envelope_events, payload_schemas
from streams.ingest.scans import scan_event
from streams.ingest.sessions import load_session_rules
from streams.kafka.codec import default_codec
from streams.model.records import derived_id
from streams.settings import Settings

RULES = load_session_rules(Settings.from_env().sessions_path())
SCHEMAS = payload_schemas(default_codec())
NOW = 1_714_557_600_000

DRIFT = {
    "scan_id": "run-812",
    "scan_type": "drift",
    "config_id": "prod-vpc",
    "completed_at": "2024-05-01T09:59:00Z",
    "findings": [
        {
            "resource": "aws_security_group.web",
            "change_type": "modified",
            "severity": "high",
            "detail": "0.0.0.0/0 added",
        },
        {"resource": "aws_s3_bucket.logs", "change_type": "deleted", "severity": "critical"},
    ],
}


def scan(body, key=None, org="acme"):
    return scan_event(body, org=org, received_at=NOW, rules=RULES, idempotency_key=key)


def envelope(body, key=None):
    return envelope_events(body, org="acme", received_at=NOW, rules=RULES, schemas=SCHEMAS, idempotency_key=key)


def test_scan_with_findings_and_a_clean_scan():
    event = scan(DRIFT)
    assert event["kind"] == "scan" and event["type"] == "scan.completed" and event["source"] == "scanner"
    assert event["session_key"] == "acme:scan:prod-vpc" and event["session_rule"] == "scan-config"
    assert event["event_id"] == derived_id("scan", "acme", "run-812")
    assert event["payload"]["status"] == "findings" and len(event["payload"]["findings"]) == 2
    assert event["payload"]["findings"][1] == {
        "resource": "aws_s3_bucket.logs",
        "change_type": "deleted",
        "rule": "",
        "severity": "critical",
        "detail": "",
    }
    assert event["labels"]["severity"] == "critical" and event["labels"]["findings"] == "2"
    clean = scan({"scan_id": "run-813", "scan_type": "compliance", "config_id": "prod-vpc", "completed_at": NOW})
    assert clean["payload"]["status"] == "clean" and clean["payload"]["findings"] == []
    assert clean["session_key"] == event["session_key"] and clean["occurred_at"] == NOW
    cost = scan(
        {"scan_type": "cost", "config_id": "team-a", "findings": [{"resource": "i-123", "rule": "idle-instance"}]},
        key="k-1",
    )
    assert cost["event_id"] == derived_id("scan", "acme", "k-1") and cost["payload"]["scan_id"] == "k-1"


@pytest.mark.parametrize(
    "body, field, reason",
    [
        ({**DRIFT, "scan_type": "perf"}, "scan_type", "expected one of drift, compliance, cost"),
        ({k: v for k, v in DRIFT.items() if k != "config_id"}, "config_id", "required"),
        ({**DRIFT, "findings": {"resource": "x"}}, "findings", "expected an array"),
        ({**DRIFT, "findings": [{"change_type": "modified"}]}, "findings[0].resource", "required"),
        ({**DRIFT, "findings": [{"resource": "x"}]}, "findings[0]", "change_type"),
        (
            {**DRIFT, "findings": [{"resource": "x", "rule": "r", "severity": 3}]},
            "findings[0].severity",
            "expected a string",
        ),
        ({**DRIFT, "status": "clean"}, "status", "'clean' but 2 findings"),
        ({**DRIFT, "status": "ok"}, "status", "expected one of"),
        ({**DRIFT, "completed_at": "noon"}, "completed_at", "RFC 3339"),
        ({**DRIFT, "labels": ["a"]}, "labels", "mapping of strings"),
    ],
)
def test_scan_errors_name_the_field(body, field, reason):
    with pytest.raises(BadRequest) as err:
        scan(body)
    assert err.value.field == field and reason in err.value.reason


GENERIC = {
    "kind": "telemetry",
    "type": "metric.sample",
    "source": "cli",
    "occurred_at": NOW - 5,
    "labels": {"alertname": "QueueDepth", "service": "billing"},
    "payload": {"metric": "queue_depth", "value": 1234.0},
}


def test_envelope_session_key_from_rules_ids_from_the_client():
    [event] = envelope({**GENERIC, "event_id": "client-7"})
    assert event["session_key"] == "acme:alert:QueueDepth:billing" and event["session_rule"] == "alert-group"
    assert event["event_id"] == derived_id("client", "acme", "client-7") and event["received_at"] == NOW
    [keyed] = envelope({**GENERIC, "session_key": "globex:mine", "org": "globex"}, key="idem-1")
    assert keyed["session_key"] == "globex:mine" and keyed["session_rule"] == "client"
    assert keyed["event_id"] == derived_id("client", "globex", "idem-1")
    many = envelope([GENERIC, GENERIC], key="batch-1")
    assert [e["event_id"] for e in many] == [derived_id("client", "acme", f"batch-1#{i}") for i in range(2)]
    random_ids = {envelope(GENERIC)[0]["event_id"] for _ in range(2)}
    assert len(random_ids) == 2  # neither an id nor a key: no idempotency, but unique


@pytest.mark.parametrize(
    "body, field, reason",
    [
        ({**GENERIC, "kind": "metrics"}, "kind", "unknown kind 'metrics'"),
        ({k: v for k, v in GENERIC.items() if k != "kind"}, "kind", "required"),
        ([], "events", "empty"),
        ([GENERIC, {**GENERIC, "kind": "alert"}], "events[1].kind", "unknown kind"),
        (
            {**GENERIC, "kind": "timer", "type": "timer.fired", "payload": None},
            "session_key",
            "no session rule applies",
        ),
        ({**GENERIC, "event_id": 7}, "event_id", "expected a string"),
        # a session is found by its key alone: org acme's event may not name globex's session, nor one of no org
        ({**GENERIC, "session_key": "globex:alert:DiskFull:db"}, "session_key", "not a session of org 'acme'"),
        ({**GENERIC, "session_key": "mine"}, "session_key", "it must start with 'acme:'"),
        ({**GENERIC, "session_key": 7}, "session_key", "not a session of org"),
        ({**GENERIC, "payload": {"value": "high"}}, "payload.value", "expected a number or null, got a string"),
        ({**GENERIC, "payload": {"vaule": 1.0}}, "payload.vaule", "unknown field"),
        ({**GENERIC, "kind": "scan", "payload": {"scan_type": "drift"}}, "payload.scan_id", "required"),
        (
            {
                **GENERIC,
                "kind": "scan",
                "payload": {
                    "scan_id": "1",
                    "scan_type": "drift",
                    "config_id": "c",
                    "status": "findings",
                    "findings": [{"resource": 5}],
                },
            },
            "payload.findings[].resource",
            "expected a string",
        ),
        ({**GENERIC, "payload": "x"}, "payload", "expected an object"),
    ],
)
def test_envelope_errors_name_the_field(body, field, reason):
    with pytest.raises(BadRequest) as err:
        envelope(body)
    assert err.value.field == field and reason in err.value.reason, str(err.value)
