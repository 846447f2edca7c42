"""Session-key rules: the shipped file, the template language, and errors with file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from streams.ingest.sessions import NoSessionRule, load_session_rules, make_facts, session_key
from streams.model.yamlfile import ConfigError
from streams.settings import Settings

SHIPPED = Settings.from_env().sessions_path()


def facts(kind="telemetry", type="alert.firing", source="prometheus", org="acme", labels=None, **extra):
    return make_facts(org=org, kind=kind, type=type, source=source, labels=labels or {}, **extra)


def test_shipped_rules_cover_every_endpoint():
    rules = load_session_rules(SHIPPED)
    assert session_key(rules, facts(labels={"alertname": "Down", "service": "api", "instance": "h:1"})) == (
        "acme:alert:Down:api",
        "alert-group",
    )
    assert session_key(rules, facts(labels={"alertname": "Down", "instance": "h:1"}))[0] == "acme:alert:Down:h:1"
    # kube-state-metrics serves every namespace: its alerts are one incident per namespace (kube-prometheus's
    # group_by [namespace]), not one for the whole cluster
    crash = {"alertname": "KubePodCrashLooping", "service": "kube-state-metrics", "instance": "10.0.0.7:8080"}
    assert session_key(rules, facts(labels={**crash, "namespace": "payments", "pod": "api-1"})) == (
        "acme:alert:KubePodCrashLooping:payments:kube-state-metrics",
        "alert-group-namespace",
    )
    assert session_key(rules, facts(labels={**crash, "namespace": "search", "pod": "api-1"}))[0].endswith(
        ":search:kube-state-metrics"
    )
    # kube-prometheus's rules through Prometheus: an alert naming only a namespace (CPUThrottlingHigh, by pod)
    # was one session per pod under a hash, and one keyed by job (KubeletDown, Thanos' mixin) likewise
    for pod in ("etl-worker-0", "etl-worker-1"):
        throttled = {"alertname": "CPUThrottlingHigh", "namespace": "batch", "pod": pod, "container": "etl"}
        assert session_key(rules, facts(labels=throttled, fingerprint=pod)) == (
            "acme:alert:CPUThrottlingHigh:batch",
            "alert-namespace",
        )
    assert session_key(rules, facts(labels={"alertname": "KubeletDown", "job": "kubelet"}, fingerprint="f02")) == (
        "acme:alert:KubeletDown:kubelet",
        "alert-group",
    )
    assert session_key(rules, facts(labels={"alertname": "X", "job": "j", "namespace": "n"}))[0] == "acme:alert:X:n:j"
    # naming no target at all (aggregated away): one session per alert name, as group_by [alertname]; they
    # were hash keys, and KubeAPIErrorBudgetBurn's critical and warning windows two sessions
    assert session_key(rules, facts(labels={"alertname": "Watchdog"}, fingerprint="f01")) == (
        "acme:alert:Watchdog",
        "alert-name",
    )
    for window in ("1h", "1d"):
        burn = {"alertname": "KubeAPIErrorBudgetBurn", "long": window, "short": "5m"}
        assert session_key(rules, facts(labels=burn, fingerprint=window))[0] == "acme:alert:KubeAPIErrorBudgetBurn"
    assert session_key(rules, facts(labels={"job": "x"}, fingerprint="f00"))[0] == "acme:alert:f00"
    # Ceph's mixin under cephadm: every cluster's alerts carry instance="ceph_cluster", the fsid only in `cluster`;
    # two clusters' CephHealthError were one incident (one Acknowledge for both)
    for fsid in ("a1f0", "7d3b"):
        ceph = {"alertname": "CephHealthError", "instance": "ceph_cluster", "job": "ceph", "cluster": fsid}
        assert session_key(rules, facts(labels=ceph)) == (
            f"acme:alert:CephHealthError:{fsid}:ceph_cluster",
            "alert-group-cluster",
        )
    in_cluster = {"alertname": "KubePodCrashLooping", "namespace": "shop", "service": "ksm", "cluster": "eu-1"}
    assert session_key(rules, facts(labels=in_cluster))[0] == "acme:alert:KubePodCrashLooping:eu-1:shop:ksm"
    assert session_key(rules, facts(labels={"alertname": "CPUThrottlingHigh", "namespace": "b", "cluster": "eu-1"}))[
        0
    ] == ("acme:alert:CPUThrottlingHigh:eu-1:b")
    assert (
        session_key(rules, facts(labels={"alertname": "Watchdog", "cluster": "eu-1"}))[0] == "acme:alert:Watchdog:eu-1"
    )
    assert session_key(rules, facts("scan", "scan.completed", "scanner", config_id="prod-vpc")) == (
        "acme:scan:prod-vpc",
        "scan-config",
    )
    assert session_key(rules, facts("webhook", "pr.opened", "github", repository="acme/api", number=12)) == (
        "acme:pr:acme/api#12",
        "pull-request",
    )
    # PagerDuty: the dedup key opsloop sent IS the session key
    assert session_key(
        rules,
        facts("webhook", "incident.acknowledged", "pagerduty", dedup_key="acme:alert:Down:api", incident_id="PX1"),
    ) == ("acme:alert:Down:api", "pagerduty-dedup-key")
    assert session_key(rules, facts("webhook", "incident.resolved", "pagerduty", incident_id="PX1")) == (
        "acme:pagerduty:PX1",
        "pagerduty-incident",
    )
    with pytest.raises(NoSessionRule, match="no session rule applies to a timer event"):
        session_key(rules, facts("timer", "timer.fired", "opsloop"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sessions.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_match_by_type_glob_source_list_and_labels(tmp_path):
    rules = load_session_rules(
        write(
            tmp_path,
            """\
        rules:
          - name: db-team
            match: {kind: telemetry, source: [prometheus, alertmanager], type: "alert.*", labels: {team: db}}
            key: "{org}:db:{labels.cluster|labels.instance}"
          - name: rest
            key: "{org}:{kind}:{fingerprint}"
        """,
        )
    )
    assert session_key(rules, facts(labels={"team": "db", "cluster": "c1", "instance": "i"})) == (
        "acme:db:c1",
        "db-team",
    )
    assert session_key(rules, facts(labels={"team": "db", "instance": "i"}))[0] == "acme:db:i"
    # a rule that matches but cannot fill its key falls through
    assert session_key(rules, facts(labels={"team": "db"}, fingerprint="ff")) == ("acme:telemetry:ff", "rest")
    assert session_key(rules, facts(source="cli", labels={"team": "db", "cluster": "c"}, fingerprint="ff"))[1] == "rest"
    assert (
        session_key(rules, facts(type="metric.sample", labels={"team": "db", "cluster": "c"}, fingerprint="ff"))[1]
        == "rest"
    )


@pytest.mark.parametrize(
    "text, line, reason",
    [
        ("rules:\n  - name: a\n    key: '{org}:{alertname}'\n", 3, "unknown fact 'alertname'"),
        ("rules:\n  - name: a\n    key: '{org}:{fingrprint}'\n", 3, "did you mean 'fingerprint'?"),
        ("rules:\n  - name: a\n    key: 'static'\n", 3, "has no placeholder"),
        ("rules:\n  - name: a\n    key: '{org'\n", 3, "unbalanced brace"),
        ("rules:\n  - name: a\n    key: '{org|}'\n", 3, "empty placeholder"),
        ("rules:\n  - name: a\n    match: {kind: telemtry}\n    key: '{org}'\n", 3, "did you mean 'telemetry'?"),
        ("rules:\n  - name: a\n    match: {knd: webhook}\n    key: '{org}'\n", 3, "unknown field 'knd'"),
        ("rules:\n  - name: a\n    match: {labels: {team: 1}}\n    key: '{org}'\n", 3, "match.labels"),
        ("rules:\n  - name: a\n    match: {kind: webhook}\n", 2, "key is required"),
        ("rules:\n  - name: a\n    key: '{org}'\n  - name: a\n    key: '{org}'\n", 4, "duplicate rule name"),
        ("rules:\n  - name: a\n    kye: '{org}'\n", 3, "unknown field 'kye' (did you mean 'key'?)"),
        ("rules: []\n", 1, "non-empty list"),
        ("rulez: []\n", 1, "unknown field 'rulez'"),
        ("rules:\n  - name: a\n    key: [1\n", 4, "invalid YAML"),
    ],
)
def test_errors_name_file_line_and_reason(tmp_path, text, line, reason):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_session_rules(path)
    assert err.value.line == line, str(err.value)
    assert str(err.value).startswith(f"{path}:{line}: ")
    assert reason in str(err.value)
