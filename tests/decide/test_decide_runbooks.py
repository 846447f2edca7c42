"""Loading the runbook set: the starter set is valid, and every error names file, line and reason."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from agents.sinks.channels import specs
from streams.model.runbooks import load_runbook_set
from streams.model.taxonomy import CATEGORIES
from streams.model.yamlfile import ConfigError
from tests.decide.helpers import RUNBOOKS

REQUIRED = {
    "high-cpu",
    "memory-oom",
    "disk-filling",
    "target-down",
    "certificate-expiry",
    "error-rate-latency",
    "deployment-failed",
    "drift-detected",
    "compliance-finding",
    "cost-anomaly",
    "pull-request-review",
}


def test_starter_set_loads_and_covers_the_issue_list():
    rset = load_runbook_set(RUNBOOKS, channels=specs())
    names = {rb.name for rb in rset.runbooks}
    assert REQUIRED <= names
    for rb in rset.runbooks:
        assert set(rb.match.categories) <= set(CATEGORIES)
        for step in rb.escalation:
            assert step.receiver in rset.routing.receivers or step.receiver == "route"
    assert {"infra-slack", "oncall-slack", "pagerduty-primary", "oncall-email", "teams-ops", "log"} <= set(
        rset.routing.receivers
    )
    assert rset.routing.receivers["pagerduty-primary"].channel == "pagerduty"
    assert len(rset.version) == 16 and rset.schedules and rset.maintenance
    assert rset.runbooks[-1].name == "default"  # the catch-all is tried last


# Names reserved for examples and tests (RFC 2606, RFC 6761): nothing answers there.
RESERVED_TLDS = ("example", "invalid", "test", "localhost")
RESERVED_DOMAINS = ("example.com", "example.net", "example.org")


def reserved(host: str) -> bool:
    labels = host.lower().rstrip(".").split(".")
    return labels[-1] in RESERVED_TLDS or ".".join(labels[-2:]) in RESERVED_DOMAINS


def test_no_starter_runbook_links_a_message_to_a_placeholder():
    """The starter runbooks linked every message to https://runbooks.example.com/<name>, which no one
    serves: followed from a delivered message, a dead link. A runbook without its own page has no link (its
    description is in the message; an alert's own runbook_url is linked anyway)."""
    rset = load_runbook_set(RUNBOOKS, channels=specs())
    for rb in rset.runbooks:
        host = urlsplit(rb.url).hostname if rb.url else None
        assert not (host and reserved(host)), f"{rb.name}: {rb.url}"
    assert reserved("runbooks.example.com") and reserved("x.test") and not reserved("notexample.com")


def test_starter_runbooks_take_real_catalogue_alerts():
    """Each catalogue-backed runbook is chosen for real rules of awesome-prometheus-alerts."""
    from classifier.dataset import load_rules, rule_to_event
    from classifier.keyword import KeywordClassifier
    from streams.model.routing import routing_labels

    rset = load_runbook_set(RUNBOOKS, channels=specs())
    wanted = {
        "Host high CPU load": "high-cpu",
        "Host out of memory": "memory-oom",
        "Host out of disk space": "disk-filling",
        "Prometheus target missing": "target-down",
        "Blackbox SSL certificate expired": "certificate-expiry",
        "Nginx high HTTP 5xx error rate": "error-rate-latency",
    }
    rules = {r.name: r for r in load_rules()}
    clf = KeywordClassifier()
    for rule_name, runbook in wanted.items():
        event = rule_to_event(rules[rule_name])
        p = clf.predict_batch([event])[0]
        labels = routing_labels(
            event["labels"],
            category=p.category,
            severity=p.severity,
            org="acme",
            source="alertmanager",
            kind="telemetry",
            event_type="alert.firing",
        )
        chosen = rset.select(
            labels, category=p.category, severity=p.severity, event_type="alert.firing", kind="telemetry"
        )
        assert chosen.name == runbook, rule_name


@pytest.mark.parametrize(
    ("alertname", "runbook"),
    [
        ("HostOutOfDiskSpace", "disk-filling"),
        ("NodeFilesystemSpaceFillingUp", "disk-filling"),  # kube-prometheus
        ("KubePersistentVolumeFillingUp", "disk-filling"),
        ("CephOSDNearFull", "disk-filling"),  # Ceph's mixin
        ("etcdDatabaseQuotaLowSpace", "disk-filling"),  # etcd's
        ("CephMonClockSkew", "storage-health"),
        ("CephOSDDown", "storage-health"),
        ("HostUnusualDiskIoLatency", "storage-health"),
    ],
)
def test_only_alerts_about_space_take_the_disk_filling_runbook(alertname, runbook):
    """Ceph's and etcd's mixins through Prometheus: 20 of Ceph's 23 rules are `disk` to the classifier, and
    each message of a monitor's clock skew or a failing device said "A filesystem is filling" with a
    log rotation run for it. The rest of `disk` is storage-health: notified, escalated, no remediation."""
    rset = load_runbook_set(RUNBOOKS, channels=specs())
    labels = {"alertname": alertname, "category": "disk", "severity": "warning", "org": "acme"}
    chosen = rset.select(labels, category="disk", severity="warning", event_type="alert.firing", kind="telemetry")
    assert chosen.name == runbook


@pytest.fixture
def broken(tmp_path: Path):
    """A copy of the starter set; the test writes one broken file into it."""
    target = tmp_path / "runbooks"
    shutil.copytree(RUNBOOKS, target)

    def write(name: str, text: str) -> Path:
        path = target / name
        path.write_text(text)
        return path

    return target, write


CASES = [
    ("typo-field.yaml", "name: x\nescalaton: []\n", 2, "unknown field 'escalaton' (did you mean 'escalation'?)"),
    ("bad-category.yaml", "name: x\nmatch:\n  category: [cpus]\n", 3, "unknown value 'cpus' (did you mean 'cpu'?)"),
    ("bad-severity.yaml", "name: x\nmatch: {severity: critical}\n", 2, "unknown value 'critical'"),
    (
        "bad-receiver.yaml",
        "name: x\nsteps:\n  - notify: {receiver: infra-slak}\n",
        3,
        "unknown receiver 'infra-slak' (did you mean 'infra-slack'?)",
    ),
    ("bad-step.yaml", "name: x\nsteps:\n  - notfy: route\n", 3, "unknown step 'notfy'"),
    ("esc-first.yaml", "name: x\nescalation:\n  - {after: 5m, receiver: log}\n", 2, "after must be 0m"),
    (
        "esc-order.yaml",
        "name: x\nescalation:\n  - {after: 0m, receiver: log}\n  - {after: 10m, receiver: log}\n  - {after: 5m, receiver: log}\n",
        5,
        "later and later",
    ),
    ("bad-duration.yaml", "name: x\npolicy:\n  cooldown: 15 minutes\n", 3, "not a duration"),
    ("bad-cap.yaml", "name: x\npolicy:\n  max_consecutive: 0\n", 3, "max_consecutive must be an integer >= 1"),
    ("verify.yaml", "name: x\nsteps:\n  - verify: {}\n", 3, "verify needs after"),
    (
        "remediate.yaml",
        "name: x\nsteps:\n  - remediate: {action: a, endpoint: ftp://x}\n",
        3,
        "endpoint must be an http(s) URL",
    ),
    (
        "params.yaml",
        "name: x\nsteps:\n  - remediate: {action: a, params: {host: '{instance}'}}\n",
        3,
        "remediate.params.host: '{instance}': a placeholder is {labels.<name>}",
    ),
    ("trigger.yaml", "name: x\ntrigger: {metric: m, operator: '>>', threshold: 1}\n", 2, "operator must be one of"),
    # a list where a word belongs: TypeError (unhashable type), a traceback from `opsloop check`
    ("trigger-list.yaml", "name: x\ntrigger: {metric: m, operator: [1, a], threshold: 1}\n", 2, "operator must be"),
    ("zz-dup.yaml", "name: high-cpu\n", 1, "already used by high-cpu.yaml"),
    ("syntax.yaml", "name: x\nmatch: {category: [cpu}\n", 2, "invalid YAML"),
    ("labels.yaml", "name: x\nmatch:\n  labels: ['service=~\"(\"']\n", 3, "invalid regular expression"),
    ("reset.yaml", "name: x\npolicy: {reset_on: [acknowledge]}\n", 2, "unknown value 'acknowledge'"),
]


@pytest.mark.parametrize("name,text,line,reason", CASES, ids=[c[0] for c in CASES])
def test_broken_runbook_is_rejected_with_file_line_reason(broken, name, text, line, reason):
    directory, write = broken
    path = write(name, text)
    with pytest.raises(ConfigError) as err:
        load_runbook_set(directory, channels=specs())
    assert err.value.path == str(path)
    assert err.value.line == line, str(err.value)
    assert reason in err.value.reason


@pytest.mark.parametrize(
    "name,text,line,reason",
    [
        (
            "schedules.yaml",
            "schedules:\n  - name: s\n    cron: '61 * * * *'\n    remediate: {action: a}\n",
            3,
            "invalid cron expression",
        ),
        (
            "schedules.yaml",
            "schedules:\n  - name: s\n    cron: '0 6 * * *'\n    timezone: Mars/Olympus\n    remediate: {action: a}\n",
            3,
            "unknown time zone",
        ),
        (
            "schedules.yaml",
            "schedules:\n  - name: s\n    cron: '0 6 * * *'\n    timezone: Europe\n    remediate: {action: a}\n",
            3,
            "unknown time zone 'Europe'",
        ),
        ("schedules.yaml", "schedules:\n  - name: s\n    cron: '0 6 * * *'\n", 2, "needs remediate"),
        (
            "schedules.yaml",
            "schedules:\n  - name: s\n    cron: '0 6 * * *'\n    enabled: 'no'\n    remediate: {action: a}\n",
            4,
            "enabled: expected true or false",
        ),
        (
            "maintenance.yaml",
            "windows:\n  - name: w\n    matchers: ['a=\"b\"']\n    start: yesterday\n    end: 2024-01-01T00:00:00Z\n",
            4,
            "not an ISO 8601 time",
        ),
        (
            "maintenance.yaml",
            "windows:\n  - name: w\n    matchers: []\n    start: 2024-01-01T00:00:00Z\n    end: 2024-01-02T00:00:00Z\n",
            3,
            "matchers",
        ),
        ("routing.yaml", "receivers:\n  - {name: log, channel: sms}\n", 2, "unknown channel 'sms'"),
    ],
)
def test_broken_companion_files_are_rejected(broken, name, text, line, reason):
    directory, write = broken
    path = write(name, text)
    with pytest.raises(ConfigError) as err:
        load_runbook_set(directory, channels=specs())
    assert (err.value.path, err.value.line) == (str(path), line), str(err.value)
    assert reason in err.value.reason


def test_yml_files_are_not_silently_ignored(broken):
    directory, write = broken
    write("stray.yml", "name: stray\n")
    with pytest.raises(ConfigError, match="use the .yaml extension"):
        load_runbook_set(directory, channels=specs())


def test_version_changes_with_any_file(broken):
    directory, write = broken
    before = load_runbook_set(directory, channels=specs()).version
    write("extra.yaml", "name: extra\nmatch: {category: network}\n")
    assert load_runbook_set(directory, channels=specs()).version != before


def test_a_worker_does_not_start_on_a_broken_set(broken, monkeypatch):
    from agents.worker import build_worker
    from streams.settings import Settings

    directory, write = broken
    write("bad-category.yaml", "name: x\nmatch:\n  category: [cpus]\n")
    with pytest.raises(ConfigError, match=r"bad-category.yaml:3: "):
        build_worker(Settings.from_env(runbooks_dir=directory, topic_prefix="never."))
