"""Rendering catalogue rules as the events Prometheus / Alertmanager would send."""

from __future__ import annotations

from classifier.dataset import Rule, alert_name, render_template, rule_to_event
from classifier.features import expr_from_generator_url

RULE = Rule(
    group="Basic resource monitoring",
    service="Host and hardware",
    exporter="node-exporter",
    name="Host out of memory",
    description="Node memory is filling up (< 10% left) on {{ $labels.instance }}: {{ $value | humanize }}",
    query="node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes * 100 < 10",
    severity="warning",
    for_="2m",
    index=41,
)


def test_alert_names_are_camel_case():
    assert alert_name("Host out of memory") == "HostOutOfMemory"
    assert alert_name("Host high CPU load") == "HostHighCpuLoad"
    assert alert_name("MySQL too many connections (> 80%)") == "MysqlTooManyConnections80"


def test_rule_to_event_shape():
    event = rule_to_event(RULE, instance="web-1:9100")
    assert event["kind"] == "telemetry" and event["type"] == "alert.firing" and event["source"] == "alertmanager"
    assert event["labels"] == {
        "alertname": "HostOutOfMemory",
        "instance": "web-1:9100",
        "job": "node-exporter",
        "severity": "warning",
    }
    assert event["annotations"]["description"] == "Node memory is filling up (< 10% left) on web-1:9100: 42"
    assert expr_from_generator_url(event["payload"]["generator_url"]) == RULE.query
    assert event["payload"]["status"] == "firing" and event["payload"]["ends_at"] is None
    assert rule_to_event(RULE, instance="web-1:9100") == event  # pure


def test_rule_to_event_options():
    resolved = rule_to_event(RULE, status="resolved", include_severity=False, source="prometheus")
    assert resolved["type"] == "alert.resolved" and "severity" not in resolved["labels"]
    assert resolved["source"] == "prometheus" and resolved["payload"]["ends_at"] is not None
    assert rule_to_event(RULE)["event_id"] != resolved["event_id"]


def test_templates_expand_like_alertmanager():
    assert render_template("{{ $labels.job }} at {{ $value }}{{ if x }}", {"job": "api"}) == "api at 42"


def test_catalogue_renders(rules):
    events = [rule_to_event(r) for r in rules]
    assert len({e["event_id"] for e in events}) == len(rules)
    assert all(e["labels"]["alertname"] and e["payload"]["generator_url"] for e in events)
