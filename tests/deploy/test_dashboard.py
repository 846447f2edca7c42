"""The dashboard and the alert rules query only metrics the code exports, and every
exported metric is used by one of them (checked both ways)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from streams import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "opsloop.json"
RULES = ROOT / "deploy" / "prometheus" / "opsloop-rules.yml"
METRIC = re.compile(r"\bopsloop_[a-z0-9_]+\b")


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dash["panels"] for t in panel.get("targets", [])]


def rule_queries() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def test_dashboard_parses_and_every_panel_has_a_query_on_the_provisioned_datasource():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["panels"]
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "opsloop-prometheus"
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["uid"] == "opsloop-prometheus"


def test_every_queried_metric_is_exported():
    exported = metrics.exported_names()
    for expr in dashboard_queries() + rule_queries():
        for name in METRIC.findall(expr):
            assert name in exported, f"{name} (in {expr!r}) is not exported by streams/metrics.py"


def test_every_exported_metric_is_on_the_dashboard():
    used = {name for expr in dashboard_queries() for name in METRIC.findall(expr)}
    for metric in metrics.ALL:
        family = metric._name  # noqa: SLF001
        assert any(name == family or name.startswith(family + "_") for name in used), (
            f"{family} is on no dashboard panel"
        )
