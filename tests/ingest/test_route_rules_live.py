"""`opsloop route rules` tells the truth: the alerts of a rule file, pushed to a real ingest as
Prometheus would push them, are decided by a real worker with the category, severity, runbook
and session the preview printed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from streams.cli.alertrules import load_alert_rules, rule_alert, verdicts
from streams.ingest.sessions import load_session_rules
from streams.kafka.reader import TopicReader
from streams.settings import Settings
from tests.decide.helpers import RUNBOOKS, starter_set
from tests.decide.test_route_rules import RULES
from tests.ingest.conftest import IngestServer, bearer, ingest_env

pytestmark = pytest.mark.integration


def test_each_alert_of_a_rule_file_is_decided_as_route_rules_said(
    topics: Settings, opsloop_env, worker_factory, tmp_path: Path
):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    rules = load_alert_rules(path)
    env = {**ingest_env(opsloop_env["KAFKA_BOOTSTRAP"], opsloop_env["OPSLOOP_TOPIC_PREFIX"]), **opsloop_env}
    server = IngestServer(env, tmp_path / "ingest.log").start()
    try:
        worker_factory()
        with httpx.Client(timeout=30) as client:
            answer = client.post(
                server.url("/api/v2/alerts"), json=[rule_alert(r) for r in rules], headers=bearer("prometheus")
            )
            assert answer.status_code == 200, answer.text
    finally:
        server.stop()

    async def read() -> list:
        async with TopicReader(topics, ["decisions"]) as reader:
            return await reader.collect(lambda rs: len(rs) >= len(rules), timeout=90)

    decided = {r.value["session_key"]: r.value for r in asyncio.run(read())}
    org = next(iter(decided.values()))["org"]
    preview = verdicts(starter_set(), rules, load_session_rules(RUNBOOKS / "sessions.yaml"), org)
    assert len(decided) == len(preview) == 4
    for row in preview:
        d = decided[row.session_key]
        assert (d["category"], d["severity"], d["runbook"]) == (row.category, row.severity, row.runbook), row.alert
