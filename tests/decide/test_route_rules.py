"""`opsloop route rules FILE...`: every alert of Prometheus rule files, classified and routed as opsloop would."""

from __future__ import annotations

import json

import pytest

from streams.cli.alertrules import load_alert_rules, rule_alert
from streams.cli.main import main
from streams.cli.runbooks import route_test
from streams.errors import ConfigError
from tests.decide.helpers import RUNBOOKS, starter_set

# A PrometheusRule object (as kube-prometheus ships them) and a plain rule file, in one
# file of two YAML documents; a recording rule among them is skipped.
RULES = """\
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: node-exporter-rules}
spec:
  groups:
    - name: node-exporter
      rules:
        - record: instance:node_cpu:ratio
          expr: sum(rate(node_cpu_seconds_total[5m])) by (instance)
        - alert: NodeFilesystemAlmostOutOfSpace
          expr: node_filesystem_avail_bytes / node_filesystem_size_bytes * 100 < 3
          for: 30m
          labels: {severity: critical}
          annotations:
            summary: Filesystem has less than 3% space left.
            description: Filesystem on {{ $labels.device }} at {{ $labels.instance }} has only {{ printf "%.2f" $value }}% available space left.
---
groups:
  - name: services
    rules:
      - alert: PostgresqlDown
        expr: pg_up == 0
        labels: {severity: P1, team: dba}
        annotations: {summary: "Postgresql down (instance {{ $labels.instance }})"}
      - alert: BackupJobSlow
        expr: backup_duration_seconds > 3600
      - alert: KubeHpaReplicasMismatch
        expr: kube_horizontalpodautoscaler_status_desired_replicas != kube_horizontalpodautoscaler_status_current_replicas
        labels: {severity: warning, category: Deployment}
"""


@pytest.fixture
def rules_file(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


def test_a_rule_file_of_two_documents_gives_its_alerting_rules_with_their_lines(rules_file):
    rules = load_alert_rules(rules_file)
    assert [(r.alert, r.line, r.group) for r in rules] == [
        ("NodeFilesystemAlmostOutOfSpace", 10, "node-exporter"),
        ("PostgresqlDown", 21, "services"),
        ("BackupJobSlow", 25, "services"),
        ("KubeHpaReplicasMismatch", 27, "services"),
    ]
    alert = rule_alert(rules[0])
    assert alert["labels"] == {"severity": "critical", "alertname": "NodeFilesystemAlmostOutOfSpace"}
    # templates expanded as the classifier's training data was: a label's name where its value is
    # unknown, a sample for a bare $value, nothing for other expressions (printf)
    assert alert["annotations"]["description"] == "Filesystem on device at instance has only % available space left."
    assert "node_filesystem_avail_bytes" in alert["generatorURL"]


def test_each_alert_gets_what_route_test_gives_its_labels(rules_file, capsys):
    assert main(["route", "rules", "--dir", str(RUNBOOKS), "--json", str(rules_file)]) == 0
    rows = {r["alert"]: r for r in json.loads(capsys.readouterr().out)}
    disk, db, slow = rows["NodeFilesystemAlmostOutOfSpace"], rows["PostgresqlDown"], rows["BackupJobSlow"]
    assert (disk["severity"], disk["severity_basis"], disk["category"]) == ("urgent", "stated", "disk")
    assert disk["runbook"] == "disk-filling" and disk["where"] == f"{rules_file}:10"
    assert (db["severity"], db["severity_basis"]) == ("urgent", "stated")  # P1, another house's word
    assert slow["severity_basis"] != "stated" and slow["category_basis"] in ("model", "unsure", "rules")
    assert disk["severity_p"] == 1.0 and 0 < slow["severity_p"] <= 1
    assert disk["session_key"].startswith("default:") and db["session_key"] != disk["session_key"]
    # a category the rule states is honoured (the model reads "replicas" as a database word)
    hpa = rows["KubeHpaReplicasMismatch"]
    assert (hpa["category"], hpa["category_basis"], hpa["runbook"]) == ("deployment", "stated", "deployment-failed")
    # the same runbook and first receivers as `route test` with that verdict
    rset = starter_set()
    for row, labels in ((disk, ["alertname=NodeFilesystemAlmostOutOfSpace"]), (db, ["alertname=PostgresqlDown"])):
        lines = route_test(rset, [*labels, f"severity={row['severity']}", f"category={row['category']}"])
        assert any(line.startswith(f"runbook:    {row['runbook']} ") for line in lines)
        assert f"notify:     {', '.join(row['notify'])}" in lines


def test_the_table_has_a_line_per_rule_and_what_they_add_up_to(rules_file, capsys):
    assert main(["route", "rules", "--dir", str(RUNBOOKS), str(rules_file)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["where", "alert", "severity", "category", "runbook", "notify"]
    assert out[1].startswith(f"{rules_file}:10") and "urgent (stated)" in out[1] and "disk-filling" in out[1]
    assert "4 alerting rules; severity stated by 3, inferred for 1; category by" in "\n".join(out)
    # a severity the model inferred says how sure it was, as the category does
    assert main(["route", "rules", "--dir", str(RUNBOOKS), "--json", str(rules_file)]) == 0
    inferred = [r for r in json.loads(capsys.readouterr().out) if r["severity_basis"] == "model"]
    assert inferred, "no rule's severity was the model's: pick one without a severity label"
    for row in inferred:
        line = next(line for line in out if f" {row['alert']} " in line)
        assert f"{row['severity']} (model {row['severity_p']:.2f})" in line, line


@pytest.mark.parametrize(
    "text, reason",
    [
        ("groups: [\n", "2: invalid YAML"),
        (
            "groups:\n  - name: g\n    rules:\n      - alert: NoExpr\n        labels: {}\n",
            "4: alert 'NoExpr' has no expr",
        ),
        (
            "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: up\n        labels: [a]\n",
            "6: labels must be",
        ),
        ("apiVersion: v1\nkind: ConfigMap\ndata: {}\n", "1: no groups"),
        ("groups: {a: 1}\n", "1: groups must be a list"),
        ("- just\n- a list\n", "expected a rule file"),
    ],
)
def test_a_malformed_rule_file_is_file_line_reason_and_exit_1(tmp_path, capsys, text, reason):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_alert_rules(path)
    assert main(["route", "rules", "--dir", str(RUNBOOKS), str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"opsloop route rules: {path}") and reason in err, err


def test_a_missing_or_binary_file_is_named(tmp_path, capsys):
    binary = tmp_path / "rules.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    for path, reason in ((tmp_path / "nope.yaml", "cannot read"), (binary, "not a text file")):
        assert main(["route", "rules", "--dir", str(RUNBOOKS), str(path)]) == 1
        assert f"{path}: {reason}" in capsys.readouterr().err


# What a house exports its rules as: `kubectl get prometheusrules -A -o yaml` (a List of PrometheusRule
# objects), then `helm template` of the prometheus-community chart (other objects, and a ConfigMap holding
# the rule file as a string).
CLUSTER = """\
apiVersion: v1
kind: List
items:
- apiVersion: monitoring.coreos.com/v1
  kind: PrometheusRule
  metadata: {name: team-a}
  spec:
    groups:
    - name: a
      rules:
      - alert: KafkaConsumerLagHigh
        expr: kafka_consumergroup_lag > 1000
        labels: {severity: warning}
- apiVersion: v1
  kind: Secret
  metadata: {name: not-rules}
- apiVersion: operator.victoriametrics.com/v1beta1
  kind: VMRule
  metadata: {name: vm}
  spec:
    groups:
    - name: vm
      rules:
      - alert: TooManyRestarts
        expr: changes(process_start_time_seconds[15m]) > 2
metadata: {resourceVersion: ""}
---
# Source: prometheus/templates/serviceaccount.yaml
apiVersion: v1
kind: ServiceAccount
metadata: {name: prometheus-server}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: prometheus-server}
data:
  allow-snippet-annotations: "false"
  alerting_rules.yml: |
    groups:
    - name: Instances
      rules:
      - alert: InstanceDown
        expr: up == 0
        for: 5m
        labels:
          severity: page
        annotations:
          summary: 'Instance {{ $labels.instance }} down'
  prometheus.yml: |
    rule_files:
    - /etc/config/alerting_rules.yml
  recording_rules.yml: |
    {}
  run.sh: "echo {{ not: yaml"
"""


def test_a_clusters_list_and_a_charts_manifests_give_the_rules_they_hold_with_the_files_lines(tmp_path, capsys):
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER)
    rules = load_alert_rules(path)
    assert [(r.alert, r.line, r.group) for r in rules] == [
        ("KafkaConsumerLagHigh", 11, "a"),
        ("TooManyRestarts", 24, "vm"),  # any kind with spec.groups (VictoriaMetrics' VMRule)
        ("InstanceDown", 42, "Instances"),
    ]
    assert CLUSTER.splitlines()[41].strip() == "- alert: InstanceDown"  # the file's own line 42
    assert main(["route", "rules", "--dir", str(RUNBOOKS), str(path)]) == 0
    assert "3 alerting rules" in capsys.readouterr().out

    # a manifest with no rules in it at all is still refused, naming its first object's line
    only = tmp_path / "deployment.yaml"
    only.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service}\n"
    )
    assert main(["route", "rules", "--dir", str(RUNBOOKS), str(only)]) == 1
    assert f"{only}:1: no groups" in capsys.readouterr().err


def test_output_read_by_a_pipe_that_closes_early_ends_quietly(tmp_path):
    """`opsloop ... | head` printed a Python traceback ending in BrokenPipeError (a tester following the README)."""
    import subprocess
    import sys

    many = "groups:\n  - name: many\n    rules:\n" + "".join(
        f"      - alert: Rule{i}\n        expr: up == 0\n        labels: {{severity: warning}}\n"
        f"        annotations: {{summary: 'rule {i} is down on {{{{ $labels.instance }}}}'}}\n"
        for i in range(600)
    )
    path = tmp_path / "many.yaml"
    path.write_text(many)
    child = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "route", "rules", str(path), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    assert child.stdout.read(10)  # what head reads, then the reader goes away
    child.stdout.close()
    err = child.stderr.read().decode()
    assert child.wait(60) == 141 and "Traceback" not in err, err[-600:]
