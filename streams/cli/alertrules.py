"""``opsloop route rules FILE...``: what opsloop would do with every alert of a Prometheus rule file.

Before pointing a house's Prometheus at opsloop, its operators want to know how their
rules will be read: which category and severity each alert gets (stated by its
``severity`` label, or inferred by the classifier, with how sure it is), which runbook
takes it and who is notified first. This answers that for whole rule files, the way
``route test`` does for one label set.

Each alerting rule becomes the alert Prometheus would push (its labels plus
``alertname``, its annotations with ``{{ $labels.x }}`` written as the label's value or
name and ``{{ $value }}`` as a sample number, its expression in ``generatorURL``), and
that alert goes through ingest's own parser (``prometheus_events``), the shipped
classifier in one batch, and ``route test``'s routing. Files may be plain rule files
(``groups:``) or Kubernetes manifests as a cluster or a chart gives them: ``PrometheusRule``
objects (``spec.groups``; any kind with ``spec.groups``, such as VictoriaMetrics' ``VMRule``), a ``List`` of them (``kubectl get prometheusrules -A -o yaml``), and
``ConfigMap`` objects holding rule files in their ``data`` (the prometheus-community chart's
``alerting_rules.yml``), several YAML documents each (``helm template``); other kinds of objects
and recording rules are skipped. A malformed file, or one with no rule groups at all, is
``file:line: reason``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.errors import ConfigError
from streams.model.yamlfile import LineDict, load_embedded_yaml_documents, load_yaml_documents

if TYPE_CHECKING:
    from classifier.prediction import Prediction
    from streams.ingest.sessions import SessionRule
    from streams.model.receivers import ChannelSpec
    from streams.model.runbooks import RunbookSet


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule of a rule file, with where it is."""

    path: str
    line: int
    group: str
    alert: str
    expr: str
    labels: dict[str, str]
    annotations: dict[str, str]

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class RuleVerdict:
    """What opsloop does with one rule's alert."""

    where: str
    alert: str
    severity: str
    severity_basis: str  # stated, model, rules, default, or the runbook's
    severity_p: float  # the classifier's probability behind it (1.0 when stated)
    category: str
    category_p: float
    category_basis: str  # model (sure enough), unsure (the model's best guess, below its threshold), rules, stated
    runbook: str
    notify: list[str]
    session_key: str


def _string_map(value: Any, path: str, line: int, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(path, line, f"{what} must be a mapping of names to values")
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


NOT_A_RULE_FILE = "no groups: expected a rule file (groups:) or a PrometheusRule (spec.groups)"


def _groups_of(doc: Any, path: str) -> list[Any] | None:
    """The rule groups of one YAML document; None for a Kubernetes object of another kind (skipped)."""
    if doc is None:
        return []
    if not isinstance(doc, LineDict):
        raise ConfigError(path, None, "expected a rule file (groups:) or a PrometheusRule (spec.groups)")
    kind = doc.get("kind") if "groups" not in doc else None
    if kind == "List":
        items = doc.get("items") or []
        if not isinstance(items, list):
            raise ConfigError(path, doc.line_of("items"), "items must be a list")
        found = [_groups_of(item, path) for item in items]
        if found and all(groups is None for groups in found):
            return None
        return [g for groups in found if groups for g in groups]
    if kind == "ConfigMap":
        return _configmap_groups(doc, path)
    spec = doc.get("spec") if "groups" not in doc else doc
    if not isinstance(spec, LineDict) or "groups" not in spec:
        if isinstance(kind, str) and "apiVersion" in doc:
            return None  # a Deployment, a Service ... of the same manifest
        raise ConfigError(path, doc.line, NOT_A_RULE_FILE)
    groups = spec["groups"]
    if groups is None:
        return []
    if not isinstance(groups, list):
        raise ConfigError(path, spec.line_of("groups"), "groups must be a list")
    return groups


def _configmap_groups(doc: LineDict, path: str) -> list[Any] | None:
    """The groups of the rule files a ConfigMap holds (each ``data`` value that is one); None when it holds none."""
    data = doc.get("data")
    if not isinstance(data, LineDict):
        return None
    groups: list[Any] = []
    held = False
    for key, text in data.items():
        if not isinstance(text, str) or "groups" not in text:
            continue
        try:
            docs = load_embedded_yaml_documents(text, path, data.line_of(key))
        except ConfigError:
            continue  # a value that is not YAML (a script, a template): not a rule file
        for inner in docs:
            if isinstance(inner, LineDict) and "groups" in inner:
                held = True
                groups.extend(_groups_of(inner, path) or [])
    return groups if held else None


def load_alert_rules(path: str | Path) -> list[AlertRule]:
    """The alerting rules of one file, in order; a malformed file raises ConfigError (file:line)."""
    name = str(path)
    out: list[AlertRule] = []
    every = [(doc, _groups_of(doc, name)) for doc in load_yaml_documents(path)]
    if every and all(groups is None for _, groups in every):
        first = every[0][0]
        raise ConfigError(name, first.line if isinstance(first, LineDict) else None, NOT_A_RULE_FILE)
    for _, found in every:
        for group in found or []:
            if not isinstance(group, LineDict):
                raise ConfigError(name, None, "each group must be a mapping with name and rules")
            rules = group.get("rules") or []
            if not isinstance(rules, list):
                raise ConfigError(name, group.line_of("rules"), "rules must be a list")
            for rule in rules:
                if not isinstance(rule, LineDict):
                    raise ConfigError(name, group.line_of("rules"), "each rule must be a mapping")
                if "alert" not in rule:
                    continue  # a recording rule
                alert = rule["alert"]
                if not isinstance(alert, str) or not alert.strip():
                    raise ConfigError(name, rule.line_of("alert"), "alert must be a non-empty name")
                expr = rule.get("expr")
                if expr is None or (isinstance(expr, str) and not expr.strip()):
                    raise ConfigError(name, rule.line, f"alert {alert!r} has no expr")
                out.append(
                    AlertRule(
                        path=name,
                        line=rule.line,
                        group=str(group.get("name") or ""),
                        alert=alert.strip(),
                        expr=str(expr),
                        labels=_string_map(rule.get("labels"), name, rule.line_of("labels"), "labels"),
                        annotations=_string_map(
                            rule.get("annotations"), name, rule.line_of("annotations"), "annotations"
                        ),
                    )
                )
    return out


def rule_alert(rule: AlertRule) -> dict[str, Any]:
    """The alert Prometheus would push for this rule (``POST /api/v2/alerts``), with sample template values."""
    from classifier.dataset import generator_url, render_template

    labels = {**{k: render_template(v, {}) for k, v in rule.labels.items()}, "alertname": rule.alert}
    annotations = {k: render_template(v, labels) for k, v in rule.annotations.items()}
    return {"labels": labels, "annotations": annotations, "generatorURL": generator_url(rule.expr)}


def verdicts(
    rset: RunbookSet, rules: Sequence[AlertRule], session_rules: Sequence[SessionRule], org: str
) -> list[RuleVerdict]:
    """Each rule's alert through ingest's parser, the shipped classifier (one batch) and route test's routing."""
    from classifier import load_classifier
    from streams.cli.runbooks import routed
    from streams.ingest.alerts import prometheus_events
    from streams.ingest.errors import BadRequest

    events = []
    for rule in rules:
        try:
            events.append(prometheus_events([rule_alert(rule)], org=org, received_at=0, rules=session_rules)[0])
        except BadRequest as exc:
            raise ConfigError(rule.path, rule.line, f"alert {rule.alert!r}: {exc}") from None
    clf = load_classifier()
    threshold = float(getattr(clf, "category_threshold", 0.0))

    def category_basis(p: Prediction) -> str:
        if p.category_basis != "model":
            return p.category_basis
        return "model" if p.category_p >= threshold else "unsure"

    out = []
    for rule, event, p in zip(rules, events, clf.predict_batch(events)):
        labels = {k: v for k, v in event["labels"].items() if k != "severity"}
        facts = {"kind": event["kind"], "event_type": event["type"], "source": event["source"], "org": event["org"]}
        stated = p.severity_basis == "stated"
        where = routed(rset, labels, facts, p.category, p.severity, stated)
        basis = p.severity_basis if where.severity == p.severity else "runbook"
        out.append(
            RuleVerdict(
                where=rule.where,
                alert=rule.alert,
                severity=where.severity,
                severity_basis=basis,
                severity_p=round(p.severity_p, 2),
                category=p.category,
                category_p=round(p.category_p, 2),
                category_basis=category_basis(p),
                runbook=where.runbook or "(none)",
                notify=where.notify,
                session_key=event["session_key"],
            )
        )
    return out


def table(rows: Sequence[RuleVerdict]) -> list[str]:
    """One line per rule, aligned, then what they add up to."""
    if not rows:
        return ["no alerting rules"]
    cells = [
        (
            r.where,
            r.alert,
            f"{r.severity} ({r.severity_basis}{f' {r.severity_p:.2f}' if r.severity_basis == 'model' else ''})",
            f"{r.category} ({r.category_basis}{'' if r.category_basis in ('rules', 'stated') else f' {r.category_p:.2f}'})",
            r.runbook,
            ", ".join(r.notify) or "(nobody)",
        )
        for r in rows
    ]
    head = ("where", "alert", "severity", "category", "runbook", "notify")
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in [head, *cells]]
    stated = sum(r.severity_basis == "stated" for r in rows)
    bases = Counter(r.category_basis for r in rows)
    categories = Counter(r.category for r in rows)
    runbooks = Counter(r.runbook for r in rows)
    lines += [
        "",
        f"{len(rows)} alerting rules; severity stated by {stated}, inferred for {len(rows) - stated}; "
        "category by " + ", ".join(f"{b} {n}" for b, n in bases.most_common()),
        "categories: " + ", ".join(f"{c} {n}" for c, n in categories.most_common()),
        "runbooks:   " + ", ".join(f"{c} {n}" for c, n in runbooks.most_common()),
    ]
    return lines


def run_route_rules(
    directory: str | None, files: Sequence[str], channels: Mapping[str, ChannelSpec], org: str, as_json: bool
) -> int:
    """The handler of ``opsloop route rules``."""
    import sys

    from streams.ingest.sessions import load_session_rules
    from streams.model.runbooks import load_runbook_set
    from streams.settings import Settings

    settings = Settings.from_env()
    if directory:
        settings = settings.model_copy(update={"runbooks_dir": Path(directory)})
    rset = load_runbook_set(settings.runbooks_dir, channels=channels)
    try:
        rules = [rule for path in files for rule in load_alert_rules(path)]
        rows = verdicts(rset, rules, load_session_rules(settings.sessions_path()), org)
    except ConfigError as exc:
        print(f"opsloop route rules: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
    else:
        print("\n".join(table(rows)))
    return 0
