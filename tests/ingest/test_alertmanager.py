"""Debian's real ``prometheus-alertmanager`` with a webhook receiver pointed at opsloop ingest.

Alerts are fed to Alertmanager through its own API (``POST /api/v2/alerts``), as a
Prometheus would; Alertmanager groups them and calls the webhook (payload version
4, bearer token, ``?org=`` on the URL). Resolving one (posting it again with an
endsAt in the past) must bring a resolved event into the same session. The
fingerprints Alertmanager computes must equal ingest's own, so an alert has one id
whichever way it arrives.
"""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from streams.devtools.broker import free_port
from streams.ingest.alerts import fingerprint
from tests.ingest.conftest import TOKENS, read_all_events, read_events

pytestmark = pytest.mark.integration


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def write_config(tmp_path, ingest_port: int, group_by: str = "alertname, service, instance") -> None:
    (tmp_path / "alertmanager.yml").write_text(
        textwrap.dedent(f"""\
        route:
          receiver: opsloop
          group_by: [{group_by}]
          group_wait: 1s
          group_interval: 1s
          repeat_interval: 1h
        receivers:
          - name: opsloop
            webhook_configs:
              - url: http://127.0.0.1:{ingest_port}/ingest/alertmanager?org=globex
                send_resolved: true
                http_config:
                  authorization: {{type: Bearer, credentials: "{TOKENS["alertmanager"]}"}}
        """)
    )


def start_alertmanager(daemons, tmp_path):
    """Debian's Alertmanager on the config write_config wrote, ready; (its daemon, its port)."""
    port = free_port()
    am = daemons.start(
        [
            "prometheus-alertmanager",
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        tmp_path / "alertmanager.log",
        f"http://127.0.0.1:{port}/-/ready",
    )
    return am, port


def test_real_alertmanager_webhook_firing_and_resolved(ingest_server, module_settings, daemons, tmp_path):
    write_config(tmp_path, ingest_server.port)
    am, port = start_alertmanager(daemons, tmp_path)
    now = datetime.now(UTC)
    checkout = {"alertname": "AmProbeCheckout", "service": "checkout", "instance": "web-1:8080", "severity": "warning"}
    database = {"alertname": "AmProbeDatabase", "instance": "db-1:5432", "severity": "critical"}
    alerts = [
        {
            "labels": checkout,
            "annotations": {"summary": "checkout errors"},
            "startsAt": iso(now - timedelta(minutes=2)),
            "generatorURL": "http://prometheus:9090/graph?g0.expr=errors",
        },
        {"labels": database, "annotations": {"summary": "db down"}, "startsAt": iso(now - timedelta(minutes=1))},
    ]
    api = f"http://127.0.0.1:{port}/api/v2/alerts"
    assert httpx.post(api, json=alerts, timeout=10).status_code == 200

    def named(records, name, status):
        return [
            r
            for r in records
            if r.value and r.value["labels"].get("alertname") == name and r.value["payload"]["status"] == status
        ]

    read_events(
        module_settings,
        lambda rs: named(rs, "AmProbeCheckout", "firing") and named(rs, "AmProbeDatabase", "firing"),
        timeout=30,
        topics=["events.telemetry"],
    )
    resolved_at = datetime.now(UTC) - timedelta(seconds=1)
    assert httpx.post(api, json=[{**alerts[0], "endsAt": iso(resolved_at)}], timeout=10).status_code == 200
    read_events(
        module_settings, lambda rs: named(rs, "AmProbeCheckout", "resolved"), timeout=30, topics=["events.telemetry"]
    )
    records = read_all_events(module_settings, idle=1.0, topics=["events.telemetry"])
    am.stop()

    [fired] = named(records, "AmProbeCheckout", "firing")
    [db] = named(records, "AmProbeDatabase", "firing")
    [resolved] = named(records, "AmProbeCheckout", "resolved")
    for record in (fired, db, resolved):
        event = record.value
        assert event["source"] == "alertmanager" and event["kind"] == "telemetry" and event["org"] == "globex"
        assert record.key.decode() == event["session_key"]
        # Alertmanager's fingerprint, as sent, equals ingest's FNV-1a over the label set
        assert event["payload"]["fingerprint"] == fingerprint(event["labels"])
    assert fired.value["session_key"] == resolved.value["session_key"] == "globex:alert:AmProbeCheckout:checkout"
    assert db.value["session_key"] == "globex:alert:AmProbeDatabase:db-1:5432"
    assert fired.value["type"] == "alert.firing" and fired.value["payload"]["ends_at"] is None
    assert fired.value["occurred_at"] == fired.value["payload"]["starts_at"]
    assert fired.value["annotations"] == {"summary": "checkout errors", "opsloop_producer": "token:alertmanager"}
    assert fired.value["payload"]["generator_url"] == "http://prometheus:9090/graph?g0.expr=errors"
    assert resolved.value["type"] == "alert.resolved"
    assert resolved.value["payload"]["starts_at"] == fired.value["payload"]["starts_at"]
    assert abs(resolved.value["occurred_at"] - int(resolved_at.timestamp() * 1000)) <= 1
    assert resolved.value["occurred_at"] == resolved.value["payload"]["ends_at"]
    assert TOKENS["alertmanager"] not in am.log()


def test_a_groups_alerts_in_one_webhook_are_numbered_for_one_message(ingest_server, module_settings, daemons, tmp_path):
    """Alertmanager posts a group's alerts together: ingest numbers each session's new alerts of the post
    (annotation opsloop_post, i/n), so decide tells them in one message at the last (Ceph's OSDs flapping were
    told one, then the rest 5 minutes later); a session with one alert in the post is not numbered."""
    write_config(tmp_path, ingest_server.port, group_by="alertname, service")
    am, port = start_alertmanager(daemons, tmp_path)
    start = iso(datetime.now(UTC) - timedelta(minutes=1))
    osds = [{"alertname": "AmProbeOsdFlapping", "service": "ceph", "ceph_daemon": f"osd.{n}"} for n in (1, 5, 7)]
    alone = {"alertname": "AmProbeAlone", "service": "ceph", "instance": "mgr-1"}
    posted = [{"labels": labels, "startsAt": start} for labels in [*osds, alone]]
    assert httpx.post(f"http://127.0.0.1:{port}/api/v2/alerts", json=posted, timeout=10).status_code == 200

    def mine(records, name):
        return [r.value for r in records if r.value and r.value["labels"].get("alertname") == name]

    records = read_events(
        module_settings,
        lambda rs: len(mine(rs, "AmProbeOsdFlapping")) == 3 and mine(rs, "AmProbeAlone"),
        timeout=30,
        topics=["events.telemetry"],
    )
    am.stop()
    numbered = sorted(e["annotations"]["opsloop_post"] for e in mine(records, "AmProbeOsdFlapping"))
    assert numbered == ["1/3", "2/3", "3/3"]
    assert len({e["session_key"] for e in mine(records, "AmProbeOsdFlapping")}) == 1
    [single] = mine(records, "AmProbeAlone")
    assert "opsloop_post" not in single["annotations"]
