"""Debian's real Prometheus scrapes a running worker and ingest; every dashboard panel has data.

Traffic is real: alerts posted to ingest (and a refused post), a poison record,
a worker deciding, timers pending and a Slack receiver (a local fake) answering.
Then each PromQL query of deploy/grafana/dashboards/opsloop.json, with Grafana's
``$__rate_interval`` replaced by a short range, must return at least one series,
and the alert rules of deploy/prometheus must load and evaluate.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from streams.devtools.broker import free_port
from streams.kafka.producer import EventProducer
from tests.deploy.test_dashboard import DASHBOARD, RULES, rule_queries
from tests.sinks.fakes import FakeServices

pytestmark = pytest.mark.integration

TOKEN = "scrape-test-token-0042"


def _alert(name: str, service: str, starts: datetime, severity: str = "critical") -> dict:
    return {
        "labels": {
            "alertname": name,
            "service": service,
            "instance": f"{service}-1:9100",
            "severity": severity,
            "org": "acme",
        },
        "annotations": {"summary": f"{name} on {service}", "description": f"{name} is firing on {service}"},
        "startsAt": starts.isoformat().replace("+00:00", "Z"),
        "endsAt": (starts + timedelta(minutes=10)).isoformat().replace("+00:00", "Z"),
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0",
    }


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s")


def _panel_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", "30s"))
        for panel in dash["panels"]
        for target in panel["targets"]
    ]


def test_real_prometheus_scrapes_a_worker_and_every_dashboard_panel_returns_data(
    topics, opsloop_env, worker_factory, daemons, tmp_path, monkeypatch
):
    settings = topics
    fakes = FakeServices().start()
    worker_port, ingest_port, prom_port = free_port(), free_port(), free_port()
    try:
        for var in ("OPSLOOP_SLACK_INFRA_WEBHOOK", "OPSLOOP_SLACK_ONCALL_WEBHOOK"):
            monkeypatch.setenv(var, fakes.url("slack", var.lower()))
        monkeypatch.setenv("OPSLOOP_INGEST_TOKENS", f"prometheus={TOKEN}")
        monkeypatch.setenv("OPSLOOP_INGEST_PORT", str(ingest_port))
        monkeypatch.setenv("OPSLOOP_INGEST_HOST", "127.0.0.1")
        worker_factory(OPSLOOP_WEB_ENABLED="true", OPSLOOP_WEB_PORT=str(worker_port))
        import sys

        daemons.start(
            [sys.executable, "-m", "streams.cli.main", "ingest"],
            tmp_path / "ingest.log",
            f"http://127.0.0.1:{ingest_port}/healthz",
        )
        _wait_http(f"http://127.0.0.1:{worker_port}/metrics", 60)

        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{RULES}]\n"
            "scrape_configs:\n"
            f"  - job_name: opsloop-worker\n    static_configs: [{{targets: ['127.0.0.1:{worker_port}']}}]\n"
            f"  - job_name: opsloop-ingest\n    static_configs: [{{targets: ['127.0.0.1:{ingest_port}']}}]\n"
        )
        daemons.start(
            [
                "prometheus",
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            tmp_path / "prometheus.log",
            f"http://127.0.0.1:{prom_port}/-/ready",
        )

        # Traffic, spread over a few seconds so rates see it across scrapes: critical
        # alerts first, then warnings of the same alert and service, which the
        # shipped inhibit rule mutes once the critical ones are known (a gate stop).
        # Pushed with startsAt five minutes back (alerts firing for a while, re-sent after an outage), so the
        # group wait is over and the first notifications go at once (Alertmanager flushes such a group at once too).
        now = datetime.now(UTC) - timedelta(minutes=5)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{ingest_port}", timeout=30) as http:
            for round_, severity in enumerate(["critical", "critical", "warning", "warning", "warning"]):
                alerts = [
                    _alert("HostHighCpuLoad", f"svc-{i}", now + timedelta(seconds=round_), severity) for i in range(5)
                ]
                assert http.post("/api/v2/alerts", json=alerts, headers=auth).status_code == 200
                assert (
                    http.post("/api/v2/alerts", json=alerts, headers={"Authorization": "Bearer wrong"}).status_code
                    == 403
                )
                time.sleep(1.5)

        async def poison() -> None:
            async with EventProducer(settings) as producer:
                await producer.send_raw("events.telemetry", b"svc-x", b"not avro at all")

        asyncio.run(poison())

        queries = _panel_queries()
        empty: list[str] = queries and [title for title, _ in queries]
        deadline = time.monotonic() + 90
        with httpx.Client(base_url=f"http://127.0.0.1:{prom_port}", timeout=10) as prom:
            while time.monotonic() < deadline:
                empty = []
                for title, expr in queries:
                    answer = prom.get("/api/v1/query", params={"query": expr}).json()
                    assert answer["status"] == "success", (title, expr, answer)
                    if not answer["data"]["result"]:
                        empty.append(f"{title}: {expr}")
                if not empty:
                    break
                time.sleep(1.0)
            assert not empty, "dashboard panels without data:\n" + "\n".join(empty)

            rules = prom.get("/api/v1/rules").json()["data"]["groups"]
            loaded = [rule for group in rules for rule in group["rules"]]
            # every rule of the file loaded (a rule Prometheus cannot parse fails the whole file)
            assert len(loaded) == len(rule_queries()) >= 6, loaded
            assert all(rule["health"] in ("ok", "unknown") for rule in loaded), loaded
        assert fakes.got("slack"), "no Slack delivery reached the receiver"
    finally:
        fakes.stop()
