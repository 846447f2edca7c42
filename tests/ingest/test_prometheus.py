"""Debian's real ``prometheus`` lists opsloop ingest as its alertmanager (bearer token).

Two rules: one that always fires (``vector(1)``) and one whose expression the test
flips from ``vector(1)`` to an empty result by rewriting the rule file and asking
Prometheus to reload (``POST /-/reload`` with --web.enable-lifecycle, which returns
once the reload is done), so "resolved" arrives at a moment the test chooses rather
than after a wall-clock guess. Prometheus re-sends firing alerts every resend delay
(2 s here), each with its endsAt moved on: each re-send is written (it moves the time
the alert resolves by itself in decide), with the same startsAt and session.
"""

from __future__ import annotations

import textwrap

import httpx
import pytest

from streams.devtools.broker import free_port
from streams.ingest.alerts import fingerprint
from tests.ingest.conftest import TOKENS, read_all_events, read_events

pytestmark = pytest.mark.integration

RULES = """\
groups:
  - name: opsloop-ingest-test
    interval: 1s
    rules:
      - alert: OpsloopAlwaysFiring
        expr: vector(1)
        labels: {{severity: warning, service: ingest-test}}
        annotations: {{summary: "fires for as long as Prometheus runs"}}
      - alert: OpsloopFlipped
        expr: {flipped}
        labels: {{severity: info, instance: flipped-1}}
        annotations: {{summary: "fires until the test flips it"}}
"""


def write_config(tmp_path, ingest_port: int):
    (tmp_path / "rules.yml").write_text(RULES.format(flipped="vector(1)"))
    (tmp_path / "prometheus.yml").write_text(
        textwrap.dedent(f"""\
        global:
          evaluation_interval: 1s
        rule_files: [{tmp_path / "rules.yml"}]
        alerting:
          alertmanagers:
            - static_configs: [{{targets: ["127.0.0.1:{ingest_port}"]}}]
              timeout: 5s
              authorization: {{type: Bearer, credentials: "{TOKENS["prometheus"]}"}}
        """)
    )


def test_real_prometheus_pushes_firing_then_resolved_and_resends_are_duplicates(
    ingest_server, module_settings, daemons, tmp_path
):
    write_config(tmp_path, ingest_server.port)
    port = free_port()
    prometheus = daemons.start(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--rules.alert.resend-delay=2s",
            "--web.enable-lifecycle",
        ],
        tmp_path / "prometheus.log",
        f"http://127.0.0.1:{port}/-/ready",
    )

    def named(records, name, status):
        return [
            r
            for r in records
            if r.value and r.value["labels"].get("alertname") == name and r.value["payload"]["status"] == status
        ]

    read_events(
        module_settings,
        lambda rs: named(rs, "OpsloopAlwaysFiring", "firing") and named(rs, "OpsloopFlipped", "firing"),
        timeout=45,
        topics=["events.telemetry"],
    )

    # Prometheus keeps re-sending both firing alerts every 2 s, endsAt moved on each time.
    read_events(
        module_settings,
        lambda rs: len(named(rs, "OpsloopAlwaysFiring", "firing")) >= 3,
        timeout=30,
        topics=["events.telemetry"],
    )

    (tmp_path / "rules.yml").write_text(RULES.format(flipped="vector(1) < 0"))
    assert httpx.post(f"http://127.0.0.1:{port}/-/reload", timeout=30).status_code == 200
    read_events(
        module_settings, lambda rs: named(rs, "OpsloopFlipped", "resolved"), timeout=45, topics=["events.telemetry"]
    )
    records = read_all_events(module_settings, idle=1.0, topics=["events.telemetry"])
    prometheus.stop()

    always = named(records, "OpsloopAlwaysFiring", "firing")
    assert len(always) >= 3 and len({r.value["event_id"] for r in always}) == len(always)
    assert len({(r.value["payload"]["starts_at"], r.value["session_key"]) for r in always}) == 1
    ends = [r.value["payload"]["ends_at"] for r in always]
    assert ends == sorted(ends) and ends[-1] > ends[0], "each re-send moves endsAt on"
    event = always[0].value
    assert event["type"] == "alert.firing" and event["source"] == "prometheus" and event["kind"] == "telemetry"
    assert (
        event["session_key"] == "acme:alert:OpsloopAlwaysFiring:ingest-test" and event["session_rule"] == "alert-group"
    )
    assert always[0].key.decode() == event["session_key"]
    assert event["labels"] == {"alertname": "OpsloopAlwaysFiring", "severity": "warning", "service": "ingest-test"}
    assert event["annotations"] == {
        "summary": "fires for as long as Prometheus runs",
        "opsloop_producer": "token:prometheus",
    }
    assert event["payload"]["fingerprint"] == fingerprint(event["labels"])
    assert f":{port}/graph?g0.expr=vector" in event["payload"]["generator_url"]  # host is Prometheus's hostname
    assert event["payload"]["ends_at"] > event["received_at"]  # firing: endsAt in the future
    assert event["occurred_at"] == event["payload"]["starts_at"]

    fired = named(records, "OpsloopFlipped", "firing")[0]
    [resolved] = named(records, "OpsloopFlipped", "resolved")
    assert fired.value["session_key"] == resolved.value["session_key"] == "acme:alert:OpsloopFlipped:flipped-1"
    assert resolved.value["type"] == "alert.resolved"
    assert resolved.value["payload"]["starts_at"] == fired.value["payload"]["starts_at"]
    assert resolved.value["occurred_at"] == resolved.value["payload"]["ends_at"] <= resolved.value["received_at"]
    assert resolved.value["event_id"] != fired.value["event_id"]
    assert TOKENS["prometheus"] not in prometheus.log()
