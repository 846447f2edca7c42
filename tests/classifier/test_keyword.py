"""The keyword baseline (and fallback) on a few telling events."""

from __future__ import annotations

from classifier.keyword import KeywordClassifier

from .conftest import alert


def test_keyword_rules():
    clf = KeywordClassifier()
    scan = {
        "kind": "scan",
        "type": "scan.completed",
        "payload": {
            "scan_type": "drift",
            "status": "findings",
            "findings": [{"resource": "sg", "change_type": "update", "rule": "", "severity": "high", "detail": "x"}],
        },
    }
    resolved = alert("HostHighCpuLoad", severity="critical")
    resolved["type"] = "alert.resolved"
    preds = clf.predict_batch([alert("HostOutOfMemory", severity="critical"), alert("SomethingDown"), scan, resolved])
    assert [(p.category, p.severity) for p in preds] == [
        ("memory", "urgent"),
        ("availability", "warning"),
        ("config_drift", "action"),
        ("cpu", "info"),
    ]
    assert not any(p.fallback for p in preds) and all(p.model_version == "keyword-1" for p in preds)


def test_one_word_never_pages():
    """Without a stated severity, one alarming word ("error", "failed", "down") is a warning, not a page."""
    clf = KeywordClassifier()
    events = [alert("ApiErrors"), alert("BackupFailed"), alert("ReplicaDown"), alert("SyncFailed")]
    for event in events:
        event["annotations"]["description"] = "Some requests returned an error."
    assert [p.severity for p in clf.predict_batch(events)] == ["warning"] * 4
    # two different urgent words, one in the name: a page
    both = alert("DatabaseDown")
    both["annotations"]["description"] = "The primary is unreachable and the service is in outage."
    assert clf.predict_batch([both])[0].severity == "urgent"


def test_keyword_inferred_flags():
    clf = KeywordClassifier()
    stated, unstated = clf.predict_batch([alert("HostOutOfMemory", severity="critical"), alert("HostOutOfMemory")])
    assert not stated.severity_inferred and stated.severity_basis == "stated"
    assert unstated.severity_inferred and unstated.severity_basis == "rules"
