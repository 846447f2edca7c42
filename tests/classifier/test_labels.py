"""The labelling rules say what LABELLING.md says."""

from __future__ import annotations

import pytest

from classifier.dataset import Rule
from classifier.examples import ExampleFormatError, expand_entry, load_examples
from classifier.labels import LabellingError, category_for, category_for_rule, severity_for_rule
from streams.model.taxonomy import CATEGORIES, SEVERITIES, normalize_severity


@pytest.mark.parametrize(
    ("name", "group", "service", "category"),
    [
        ("Host out of memory", "Basic resource monitoring", "Host and hardware", "memory"),
        ("Host high CPU load", "Basic resource monitoring", "Host and hardware", "cpu"),
        ("Host out of disk space", "Basic resource monitoring", "Host and hardware", "disk"),
        ("Blackbox SSL certificate expired", "Basic resource monitoring", "Blackbox", "certificate"),
        # symptom words beat the service's domain ...
        ("Elasticsearch disk out of space", "Databases", "Elasticsearch", "disk"),
        ("Redis out of system memory", "Databases", "Redis", "memory"),
        # ... the domain beats generic availability / error words
        ("Postgresql down", "Databases", "PostgreSQL", "database"),
        ("Kafka consumer group lag", "Message brokers", "Kafka", "message_broker"),
        ("Ceph PG down", "Storage", "Ceph", "disk"),
        ("Apache down", "Proxies, load balancers and service meshes", "Apache", "availability"),
        ("HAProxy HTTP slowing down", "Proxies, load balancers and service meshes", "HaProxy", "latency_errors"),
        ("Nginx high HTTP 5xx error rate", "Proxies, load balancers and service meshes", "Nginx", "latency_errors"),
        ("Kubernetes Deployment rollout stuck", "Orchestrators", "Kubernetes", "deployment"),
        (
            "Prometheus configuration reload failure",
            "Basic resource monitoring",
            "Prometheus self-monitoring",
            "config_drift",
        ),
        ("Keycloak high login failure rate", "Network and security", "Keycloak", "security"),
        ("DigitalOcean monthly spend high", "Cloud providers", "DigitalOcean", "cost"),
        ("IPMI fan speed zero", "Basic resource monitoring", "IPMI", "other"),
        ("Go goroutine count high", "Runtimes", "Golang", "other"),
        ("AWS RDS high database connections", "Cloud providers", "AWS CloudWatch", "database"),
    ],
)
def test_category_rules(name, group, service, category):
    assert category_for(name, group, service) == category


def _rule(severity: str) -> Rule:
    return Rule("g", "s", "e", "Something", "", "up == 0", severity, None, 0)


def test_severity_mapping():
    assert [severity_for_rule(_rule(s)) for s in ("critical", "warning", "info")] == ["urgent", "warning", "info"]
    with pytest.raises(LabellingError):
        severity_for_rule(_rule("sometimes"))
    assert normalize_severity("P1") == "urgent" and normalize_severity(" High ") == "action"
    assert normalize_severity("none") == "info" and normalize_severity("whatever") is None


def test_every_catalogue_rule_gets_a_label(rules):
    assert len(rules) == 1155
    assert {category_for_rule(r) for r in rules} <= set(CATEGORIES)
    assert {severity_for_rule(r) for r in rules} == {"urgent", "warning", "info"}


def test_examples_are_labelled_within_the_taxonomy():
    examples = load_examples()
    assert len(examples) >= 100
    assert {e.category for e in examples} <= set(CATEGORIES)
    assert {e.severity for e in examples} == set(SEVERITIES)
    kinds = {e.event["kind"] for e in examples}
    assert {"scan", "webhook", "timer", "telemetry"} <= kinds


def test_malformed_examples_are_named():
    with pytest.raises(ExampleFormatError, match="ex-9"):
        expand_entry(
            {
                "id": "ex-9",
                "group": "g",
                "service": "s",
                "category": "nonsense",
                "severity": "info",
                "timer": {"timer": "t"},
            }
        )
    with pytest.raises(ExampleFormatError, match="exactly one"):
        expand_entry({"id": "ex-8", "group": "g", "service": "s", "category": "other", "severity": "info"})


@pytest.mark.parametrize(
    ("word", "level"),
    [
        ("SEV-1", "urgent"),
        ("sev 2", "action"),
        ("Sev_3", "warning"),
        ("P0", "urgent"),
        ("s1", "urgent"),
        ("ticket", "action"),
        ("Highest", "urgent"),
        ("trivial", "info"),
        ("P1 - Critical", "urgent"),
        ("3 - Moderate", "warning"),
        ("Sev1 (Critical)", "urgent"),
        ("[P2] High", "action"),
    ],
)
def test_severity_words_of_other_houses(word, level):
    assert normalize_severity(word) == level


def test_a_long_or_unknown_severity_word_is_none():
    assert normalize_severity("sev-" * 50) is None
    assert normalize_severity("p-9") is None and normalize_severity("") is None
    assert normalize_severity("not critical") is None and normalize_severity("whatever it takes") is None
    assert normalize_severity("sky-high") is None  # a level must lead, or follow a number
