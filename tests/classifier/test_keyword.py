"""The keyword baseline (and fallback) on a few telling events."""

from __future__ import annotations

from classifier.keyword import KeywordClassifier

from .conftest import alert


def test_keyword_rules():
    clf = KeywordClassifier()
    scan = {"kind": "scan", "type": "scan.completed", "payload": {"scan_type": "drift", "status": "findings",
            "findings": [{"resource": "sg", "change_type": "update", "rule": "", "severity": "high", "detail": "x"}]}}
    resolved = alert("HostHighCpuLoad", severity="critical")
    resolved["type"] = "alert.resolved"
    preds = clf.predict_batch([alert("HostOutOfMemory", severity="critical"), alert("SomethingDown"), scan, resolved])
    assert [(p.category, p.severity) for p in preds] == [
        ("memory", "urgent"), ("availability", "urgent"), ("config_drift", "action"), ("cpu", "info")
    ]
    assert not any(p.fallback for p in preds) and all(p.model_version == "keyword-1" for p in preds)
