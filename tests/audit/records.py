"""Small, schema-valid records of each projected kind, for audit tests."""

from __future__ import annotations


def event(i: int, session: str, t0: int = 1_700_000_000_000) -> dict:
    return {
        "event_id": f"ev-{i}",
        "session_key": session,
        "session_rule": "test",
        "kind": "telemetry",
        "type": "alert.firing",
        "source": "alertmanager",
        "org": "acme",
        "occurred_at": t0 + i * 1000,
        "received_at": t0 + i * 1000 + 5,
        "labels": {"alertname": "HostHighCpuLoad", "severity": "warning"},
        "annotations": {},
        "payload": {
            "status": "firing",
            "starts_at": t0,
            "ends_at": None,
            "generator_url": "",
            "fingerprint": "f",
            "metric": None,
            "value": None,
        },
    }


def decision(i: int, session: str, t0: int = 1_700_000_000_000) -> dict:
    return {
        "decision_id": f"dec-{i}",
        "event_id": f"ev-{i}",
        "session_key": session,
        "org": "acme",
        "kind": "telemetry",
        "type": "alert.firing",
        "decided_at": t0 + i * 1000,
        "category": "cpu",
        "severity": "warning",
        "confidence": 0.9,
        "classifier": "model-test",
        "fallback": False,
        "runbook": "high-cpu",
        "runbook_set_version": "rs-1",
        "gates": [{"gate": "cooldown", "verdict": "pass" if i % 2 == 0 else "stop", "reason": "15m"}],
        "outcome": "notified" if i % 2 == 0 else "suppressed",
        "effect_ids": [f"eff-{i}"] if i % 2 == 0 else [],
    }


def effect(i: int, session: str, t0: int = 1_700_000_000_000) -> dict:
    return {
        "effect_id": f"eff-{i}",
        "event_id": f"ev-{i}",
        "session_key": session,
        "org": "acme",
        "type": "notify",
        "created_at": t0 + i * 1000,
        "runbook": "high-cpu",
        "notify": {
            "channel": "slack",
            "receiver": "infra-slack",
            "severity": "warning",
            "title": f"CPU {i}",
            "body": "",
            "fields": {},
            "links": [],
            "dedupe_key": session,
            "thread_key": session,
            "action": "trigger",
        },
        "timer": None,
        "cancel": None,
        "remediate": None,
    }


def delivery(i: int, session: str, t0: int = 1_700_000_000_000) -> dict:
    return {
        "effect_id": f"eff-{i}",
        "session_key": session,
        "channel": "slack",
        "receiver": "infra-slack",
        "status": "delivered",
        "attempts": 2,
        "http_status": 200,
        "latency_ms": 12.5,
        "error": None,
        "completed_at": t0 + i * 1000 + 300,
    }
