"""`opsloop check`, `opsloop route test`, `opsloop silence` (the parts that need no broker)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from streams.cli.main import main
from tests.decide.helpers import ROOT, RUNBOOKS


def test_check_passes_on_the_starter_set(capsys):
    assert main(["check", "--dir", str(RUNBOOKS)]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "21 runbooks" in out and "version" in out


def test_check_on_a_broken_runbook_prints_file_line_reason_and_exits_non_zero(tmp_path):
    target = tmp_path / "runbooks"
    shutil.copytree(RUNBOOKS, target)
    (target / "high-cpu.yaml").write_text(
        "name: high-cpu\nmatch: {category: cpu}\nsteps:\n  - notify: {receiver: pagerduty-primry}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli.main", "check", "--dir", str(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"opsloop: {target / 'high-cpu.yaml'}:4: runbook 'high-cpu': steps[0]: unknown receiver 'pagerduty-primry' "
        "(did you mean 'pagerduty-primary'?) (receivers are declared in routing.yaml)"
    )
    assert proc.stdout == ""


def test_check_reads_the_directory_from_the_environment(tmp_path, monkeypatch, capsys):
    target = tmp_path / "rb"
    shutil.copytree(RUNBOOKS, target)
    (target / "routing.yaml").write_text("route:\n  receiver: nowhere\n")
    monkeypatch.setenv("OPSLOOP_RUNBOOKS_DIR", str(target))
    assert main(["check"]) == 1
    assert f"{target / 'routing.yaml'}:2: route: unknown receiver 'nowhere'" in capsys.readouterr().err


def test_route_test_prints_runbook_routes_receivers_and_chain(capsys):
    code = main(
        [
            "route",
            "test",
            "--dir",
            str(RUNBOOKS),
            "alertname=PostgresqlDown",
            "service=billing-db",
            "severity=critical",
            "category=availability",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "severity 'critical' is normalised to 'urgent'" in out
    assert "runbook:    target-down (target-down.yaml:" in out
    assert "route:      route.routes[1] -> oncall-slack" in out
    assert "notify:     oncall-slack" in out  # the route an urgent alert takes: on-call from the start
    assert "escalation: +5m oncall-slack, +15m pagerduty-primary" in out


def test_route_test_classifies_when_category_is_not_given(capsys):
    assert main(["route", "test", "--dir", str(RUNBOOKS), "alertname=HostOutOfDiskSpace", "instance=db-1"]) == 0
    out = capsys.readouterr().out
    assert "category=disk" in out and "runbook:    disk-filling" in out


def test_route_test_for_a_compliance_scan_reaches_email_and_teams(capsys):
    assert (
        main(
            [
                "route",
                "test",
                "--dir",
                str(RUNBOOKS),
                "kind=scan",
                "event_type=scan.completed",
                "category=compliance",
                "severity=action",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "-> oncall-email" in out and "-> teams-ops" in out
    assert "notify:     oncall-email, teams-ops" in out
    assert "group_wait 0s" in out  # a scan result is a whole message


@pytest.mark.parametrize("expect,code", [("infra-slack", 0), ("oncall-slack", 1)])
def test_route_test_verify_receivers(expect, code, capsys):
    args = [
        "route",
        "test",
        "--dir",
        str(RUNBOOKS),
        "alertname=HostHighCpuLoad",
        "category=cpu",
        "severity=warning",
        "--verify-receivers",
        expect,
    ]
    assert main(args) == code


def test_route_test_rejects_a_bad_pair(capsys):
    assert main(["route", "test", "--dir", str(RUNBOOKS), "justaword"]) == 1
    assert "expected label=value" in capsys.readouterr().err
    # an event of no kind is dead-lettered by decide: route test showed the default route for it
    assert main(["route", "test", "--dir", str(RUNBOOKS), "service=x", "kind=metric"]) == 1
    assert "unknown kind 'metric'; expected one of telemetry, webhook, timer, scan" in capsys.readouterr().err


def test_silence_add_rejects_a_bad_matcher_before_touching_kafka(capsys):
    assert main(["silence", "add", 'service=~"("', "--duration", "1h"]) == 1
    assert "invalid regular expression" in capsys.readouterr().err


@pytest.mark.parametrize("matchers", [['service!="web"'], ['service=~".*"'], ['env=""', 'team!~"a|b"'], ['x=~"y|"']])
def test_a_silence_whose_every_matcher_matches_a_missing_label_is_refused(capsys, matchers):
    """`service!="web"` alone muted every alert of every other service (and of none): Alertmanager refuses such a
    silence ("at least one matcher must not match the empty string"), and so do the CLI, ingest and decide."""
    from streams.model.silences import SilenceError, silence_from_json

    assert main(["silence", "add", *matchers, "--duration", "1h"]) == 1
    assert "at least one matcher must not match an empty or missing label" in capsys.readouterr().err
    with pytest.raises(SilenceError, match="must select something"):
        silence_from_json({"matchers": matchers, "starts_at": 1, "ends_at": 2})
    assert silence_from_json({"matchers": [*matchers, 'service="db"'], "starts_at": 1, "ends_at": 2})


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        ("sessions.yaml", "rules: 5\n", "sessions.yaml:1: rules: expected a non-empty list of rules"),
        (
            "ingest-scopes.yaml",
            "producers:\n  a: {orgs: [a]}\n  a: {orgs: [b]}\n",
            "ingest-scopes.yaml:3: duplicate key 'a'",
        ),
    ],
)
def test_check_reads_the_session_rules_and_scopes_as_ingest_does(tmp_path, capsys, name, text, error):
    """`opsloop check` said ok to a sessions.yaml of `rules: 5` that `opsloop ingest` refused at start."""
    target = tmp_path / "runbooks"
    shutil.copytree(RUNBOOKS, target)
    assert main(["check", "--dir", str(target)]) == 0
    assert "14 session rules" in capsys.readouterr().out
    (target / name).write_text(text)
    assert main(["check", "--dir", str(target)]) == 1
    assert error in capsys.readouterr().err


def test_route_test_reads_type_as_an_alerts_label_when_an_alertname_is_given(capsys):
    """Ceph's rules all carry the label type="ceph_default": `route test alertname=CephHealthError type=ceph_default`
    answered for an event of type ceph_default ("no runbook names type"), not for the alert."""
    pairs = ["alertname=CephHealthError", "severity=critical", "type=ceph_default", "category=availability"]
    assert main(["route", "test", "--dir", str(RUNBOOKS), *pairs]) == 0
    out = capsys.readouterr().out
    assert "runbook:    target-down" in out and "no runbook names type" not in out
    assert main(["route", "test", "--dir", str(RUNBOOKS), "type=build.queued"]) == 0  # no alertname: the event type
    assert "no runbook names type 'build.queued'" in capsys.readouterr().out
