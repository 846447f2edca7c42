"""Seed notification types posted to ``/ingest/events`` reach a decision and an effect,
through a real ingest, the real broker and a real worker (the shipped classifier and the
starter runbooks): a named type notifies, an unknown type is ``unmatched`` and its
session's default receiver is told once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from streams.kafka.reader import TopicReader
from streams.settings import Settings
from tests.ingest.conftest import IngestServer, bearer, ingest_env

pytestmark = pytest.mark.integration


def post(client: httpx.Client, server: IngestServer, etype: str, subject: str, event_id: str) -> dict:
    body = {
        "kind": "webhook",
        "type": etype,
        "source": "agents",
        "event_id": event_id,
        "occurred_at": 1_700_000_000_000 + int(event_id[1:]) * 1000,
        "annotations": {"summary": f"{etype} for {subject}"},
        "payload": {"provider": "agents", "action": etype.rsplit(".", 1)[-1], "subject": subject},
    }
    answer = client.post(server.url("/ingest/events"), json=body, headers=bearer("prometheus"))
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_seed_types_through_ingest_and_a_worker(topics: Settings, opsloop_env, worker_factory, tmp_path: Path):
    settings = topics
    env = {**ingest_env(opsloop_env["KAFKA_BOOTSTRAP"], opsloop_env["OPSLOOP_TOPIC_PREFIX"]), **opsloop_env}
    server = IngestServer(env, tmp_path / "ingest.log").start()
    try:
        worker_factory()
        with httpx.Client(timeout=30) as client:
            post(client, server, "agent.needs_input", "run-7", "e1")
            post(client, server, "finding.critical", "scan-9", "e2")
            post(client, server, "chain_complete", "full_analysis", "e3")
            post(client, server, "build.queued", "pipeline-3", "e4")
            post(client, server, "build.started", "pipeline-3", "e5")  # same session: told once
    finally:
        server.stop()

    want = 5

    async def read() -> list:
        async with TopicReader(settings, ["decisions", "outbox"]) as reader:
            return await reader.collect(
                lambda rs: (
                    sum(r.topic == "decisions" for r in rs) >= want and sum(r.topic == "outbox" for r in rs) >= 4
                ),
                timeout=90,
            )

    records = asyncio.run(read())
    decisions = {r.value["type"]: r.value for r in records if r.topic == "decisions"}
    notices = [r.value for r in records if r.topic == "outbox" and r.value["type"] == "notify"]
    by_type = {n["notify"]["title"].split(":")[0]: n for n in notices}

    assert decisions["agent.needs_input"]["outcome"] == "notified"
    assert decisions["agent.needs_input"]["runbook"] == "agent-needs-input"
    assert by_type["agent.needs_input"]["notify"]["severity"] == "action"
    assert decisions["finding.critical"]["runbook"] == "agent-critical"
    assert by_type["finding.critical"]["notify"]["receiver"] == "oncall-slack"
    assert decisions["chain_complete"]["runbook"] == "agent-work-done"
    assert by_type["chain_complete"]["notify"]["receiver"] == "log"
    assert decisions["build.queued"]["outcome"] == decisions["build.started"]["outcome"] == "unmatched"
    assert decisions["build.queued"]["session_key"] == "acme:agents:pipeline-3"
    unmatched = [n for n in notices if n["notify"]["title"].startswith("Unmatched event type")]
    assert [n["notify"]["receiver"] for n in unmatched] == ["infra-slack"]
    assert {
        "gate": "unmatched",
        "verdict": "stop",
        "reason": "infra-slack was told of unmatched events in episode 0",
    } in (decisions["build.started"]["gates"])
