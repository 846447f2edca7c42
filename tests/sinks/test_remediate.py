"""Remediation: runbook actions are called once, only when both switches allow it.

A real HTTP endpoint (aiohttp, in a thread) stands in for the team's action
service: it checks the bearer token, the Idempotency-Key and the call itself,
and can be scripted to fail.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.sinks.channels import specs
from agents.sinks.channels.webhook import SIGNATURE_HEADER, verify
from streams.model.receivers import Receiver
from streams.model.routing import load_routing
from streams.model.yamlfile import ConfigError
from tests.sinks.fakes import Answer, FakeServices
from tests.sinks.helpers import Harness

TOKEN = "action-token-SECRET-4c2e91"
SIGNING_KEY = "action-signing-SECRET-77ab"
ENV = {"OPSLOOP_TEST_ACTION_TOKEN": TOKEN, "OPSLOOP_TEST_ACTION_KEY": SIGNING_KEY}
RECEIVERS = {
    "remediate": Receiver(
        "remediate", "remediate", {}, {"token": "OPSLOOP_TEST_ACTION_TOKEN", "signing_key": "OPSLOOP_TEST_ACTION_KEY"}
    )
}
_seq = itertools.count()


@pytest.fixture(scope="module")
def actions() -> Iterator[FakeServices]:
    services = FakeServices(action_tokens={"guarded": TOKEN}).start()
    yield services
    services.stop()


def remediation(
    endpoint: str,
    *,
    action: str = "restart-workload",
    dry_run: bool = False,
    method: str = "POST",
    params: dict[str, str] | None = None,
    approved: bool = False,
) -> dict[str, Any]:
    n = next(_seq)
    return {
        "effect_id": f"eff-rem-{n:06d}",
        "event_id": f"evt-rem-{n:06d}",
        "session_key": "acme:alert:oom-node-1",
        "org": "acme",
        "type": "remediate",
        "created_at": 1_700_000_000_000 + n,
        "runbook": "memory-oom",
        "notify": None,
        "timer": None,
        "cancel": None,
        "remediate": {
            "action": action,
            "endpoint": endpoint,
            "method": method,
            "params": params if params is not None else {"namespace": "shop", "workload": "cart"},
            "dry_run": dry_run,
            "requires_approval": approved,
        },
    }


def run(receivers, pg_engine, *effects, env=ENV, **settings) -> tuple[list[str], Harness]:
    async def go():
        async with Harness(receivers, pg_engine, env, **settings) as h:
            return await h.run(*effects), h

    return asyncio.run(go())


def test_a_dry_run_step_calls_nothing_even_when_enabled(actions: FakeServices, pg_engine, caplog) -> None:
    effect = remediation(actions.url("actions", "guarded"), dry_run=True)
    before = len(actions.got("actions"))
    with caplog.at_level(logging.INFO, logger="opsloop.notifications"):
        statuses, h = run(RECEIVERS, pg_engine, effect, remediation_enabled=True)
    assert statuses == ["dry_run"]
    assert len(actions.got("actions")) == before
    [receipt] = h.emitter.receipts
    assert (receipt["status"], receipt["channel"], receipt["receiver"]) == (
        "dry_run",
        "remediate",
        "remediate:restart-workload",
    )
    assert "the runbook step is dry_run" in caplog.text and "action=restart-workload" in caplog.text


def test_a_live_step_on_a_disabled_worker_calls_nothing(actions: FakeServices, pg_engine, caplog) -> None:
    effect = remediation(actions.url("actions", "guarded"), dry_run=False)
    before = len(actions.got("actions"))
    with caplog.at_level(logging.INFO, logger="opsloop.notifications"):
        statuses, h = run(RECEIVERS, pg_engine, effect)  # remediation_enabled defaults to False
    assert statuses == ["dry_run"] and len(actions.got("actions")) == before
    assert "OPSLOOP_SINK_REMEDIATION_ENABLED" in caplog.text
    assert h.emitter.dead == []


def test_an_enabled_live_step_calls_the_endpoint_once(actions: FakeServices, pg_engine) -> None:
    effect = remediation(actions.url("actions", "guarded"), approved=True)
    before = len(actions.got("actions", "guarded"))
    statuses, h = run(RECEIVERS, pg_engine, effect, remediation_enabled=True)
    assert statuses == ["delivered"]
    [call] = actions.got("actions", "guarded")[before:]
    assert call.errors == [] and call.answered == 200
    assert call.headers["Idempotency-Key"] == effect["effect_id"]
    assert verify(SIGNING_KEY, call.body, call.headers[SIGNATURE_HEADER])
    assert call.json == {
        "action": "restart-workload",
        "params": {"namespace": "shop", "workload": "cart"},
        "effect_id": effect["effect_id"],
        "event_id": effect["event_id"],
        "session_key": "acme:alert:oom-node-1",
        "org": "acme",
        "runbook": "memory-oom",
        "approved": True,
        "requested_at": effect["created_at"],
    }
    assert h.emitter.receipts[0]["receiver"] == "remediate:restart-workload"

    # The same effect again (a redelivery after a restart): the ledger answers, the action is not called.
    statuses, h = run(RECEIVERS, pg_engine, effect, remediation_enabled=True)
    assert statuses == ["skipped"]
    assert len(actions.got("actions", "guarded")) == before + 1


def test_get_sends_the_parameters_in_the_query(actions: FakeServices, pg_engine) -> None:
    effect = remediation(
        actions.url("actions", "open"),
        action="scale-deployment",
        method="GET",
        params={"replicas": "+2", "deployment": "api"},
    )
    before = len(actions.got("actions", "open"))
    statuses, _ = run(RECEIVERS, pg_engine, effect, remediation_enabled=True)
    assert statuses == ["delivered"]
    [call] = actions.got("actions", "open")[before:]
    assert call.errors == [] and call.body == b""
    assert call.headers["X-Opsloop-Action"] == "scale-deployment"


def test_a_5xx_is_retried_and_a_refusal_is_dead_lettered_without_the_token(
    actions: FakeServices, pg_engine, caplog
) -> None:
    actions.script("actions", "guarded", Answer(503, "busy"))
    flaky = remediation(actions.url("actions", "guarded"))
    statuses, h = run(RECEIVERS, pg_engine, flaky, remediation_enabled=True)
    assert statuses == ["delivered"] and h.emitter.receipts[0]["attempts"] == 2

    wrong = {"remediate": Receiver("remediate", "remediate", {}, {"token": "OPSLOOP_TEST_WRONG_TOKEN"})}
    refused = remediation(actions.url("actions", "guarded"))
    with caplog.at_level(logging.DEBUG):
        statuses, h = run(
            wrong,
            pg_engine,
            refused,
            env={**ENV, "OPSLOOP_TEST_WRONG_TOKEN": "wrong-SECRET-0000"},
            remediation_enabled=True,
        )
    assert statuses == ["dead"]
    [receipt] = h.emitter.receipts
    [letter] = h.emitter.dead
    assert receipt["http_status"] == 400 and "bad or missing bearer token" in letter["reason"]
    everything = json.dumps(h.emitter.receipts, default=str) + json.dumps(h.emitter.dead, default=str) + caplog.text
    assert "wrong-SECRET-0000" not in everything and TOKEN not in everything


def test_a_step_without_endpoint_is_dead_lettered_with_the_reason(pg_engine) -> None:
    statuses, h = run(RECEIVERS, pg_engine, remediation(""), remediation_enabled=True)
    assert statuses == ["dead"]
    assert "has no endpoint" in h.emitter.dead[0]["reason"]


ROUTING = """\
receivers:
  - name: remediate
    channel: remediate
    {secret_line}
  - name: ops
    channel: log
route:
  receiver: {root}
"""


def write(tmp_path: Path, **kw: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(textwrap.dedent(ROUTING).format(**kw))
    return path


def test_the_routing_file_takes_the_action_credentials_by_env_name(tmp_path: Path) -> None:
    routing = load_routing(
        write(tmp_path, secret_line="secrets: {token: OPSLOOP_ACTION_TOKEN}", root="ops"), channels=specs()
    )
    assert routing.receivers["remediate"].secret_env == {"token": "OPSLOOP_ACTION_TOKEN"}

    with pytest.raises(ConfigError) as err:
        load_routing(write(tmp_path, secret_line="settings: {token: s3cr3t}", root="ops"), channels=specs())
    assert err.value.line == 4 and "token is a secret" in str(err.value)

    with pytest.raises(ConfigError) as err:
        load_routing(
            write(tmp_path, secret_line="secrets: {token: OPSLOOP_ACTION_TOKEN}", root="remediate"), channels=specs()
        )
    assert err.value.line == 8 and "not a notification channel" in str(err.value)


# -- the whole loop in a worker ---------------------------------------------------------


@pytest.mark.integration
def test_an_approved_drift_fix_is_called_once_by_a_worker(
    topics, worker_factory, actions: FakeServices, tmp_path: Path
) -> None:
    """Scan → notify and wait; approval → remediate effect → the sink calls the action, with the token."""
    import shutil

    from streams.kafka.reader import TopicReader
    from tests.decide.helpers import scan, webhook
    from tests.decide.scenario import MIN, T0, Topics, worker_env

    runbooks = tmp_path / "runbooks"
    shutil.copytree(Path(__file__).parents[2] / "runbooks", runbooks)
    (runbooks / "schedules.yaml").unlink()  # no cron dispatch to scanner.internal in this test
    drift = runbooks / "drift-detected.yaml"
    drift.write_text(
        drift.read_text().replace("http://remediator.internal/actions/drift-pr", actions.url("actions", "drift-pr"))
    )
    actions.action_tokens["drift-pr"] = TOKEN
    worker_factory(
        **worker_env(tmp_path),
        OPSLOOP_RUNBOOKS_DIR=str(runbooks),
        OPSLOOP_SINK_REMEDIATION_ENABLED="true",
        OPSLOOP_REMEDIATION_TOKEN=TOKEN,
    )
    findings = [
        {"resource": "aws_s3_bucket.logs", "change_type": "update", "rule": "", "severity": "medium", "detail": "acl"}
    ]
    found = scan("findings", at=T0, findings=findings)
    approval = webhook("remediation.approved", at=T0 + MIN, session=found["session_key"], actor="bob")

    async def scenario() -> tuple[Topics, list]:
        async with Topics(topics) as t:
            await t.push([found])
            await t.until(lambda t: t.decided([found["event_id"]]), what="the scan decided")
            assert [e for e in t.effects() if e["type"] == "remediate"] == []  # waiting for approval
            await t.push([approval])
            await t.until(lambda t: any(e["type"] == "remediate" for e in t.effects()), what="the remediate effect")
        [effect] = [e for e in t.effects() if e["type"] == "remediate"]
        async with TopicReader(topics, ["deliveries"], from_beginning=True) as reader:
            receipts = await reader.collect(
                lambda rs: any(r.value["effect_id"] == effect["effect_id"] for r in rs), timeout=60
            )
        return effect, [r.value for r in receipts if r.value["effect_id"] == effect["effect_id"]]

    effect, receipts = asyncio.run(scenario())
    assert [(r["status"], r["receiver"]) for r in receipts] == [("delivered", "remediate:open-drift-pr")]
    [call] = actions.got("actions", "drift-pr")
    assert call.errors == [] and call.answered == 200
    assert call.json["params"]["approved_by"] == "bob" and call.json["approved"] is True
    assert call.headers["Idempotency-Key"] == effect["effect_id"]


DRILL = """\
name: remediation-drill
priority: 100
match: {{labels: ['alertname="RemediationDrill"']}}
policy: {{escalate_from: info}}
steps:
  - notify: {{receiver: log}}
  - remediate: {{action: restart-drill, endpoint: "{endpoint}", dry_run: false, retries: 1, timeout: 2s,
                on_failure: {{escalate: true}}}}
escalation:
  - {{after: 0m, receiver: log}}
  - {{after: 30m, receiver: oncall-slack}}
"""


@pytest.mark.integration
def test_a_remediation_failing_until_its_retries_run_out_escalates_in_a_worker(
    topics, worker_factory, actions: FakeServices, tmp_path: Path
) -> None:
    """Alert → remediate effect → the endpoint answers 500 twice (retries: 1) → the sink announces
    remediation.failed → decide runs the step's on_failure: the chain's next step (oncall-slack) now,
    not in 30 minutes."""
    import shutil

    from streams.kafka.producer import now_ms
    from tests.decide.helpers import alert
    from tests.decide.scenario import Topics, worker_env

    runbooks = tmp_path / "runbooks"
    shutil.copytree(Path(__file__).parents[2] / "runbooks", runbooks)
    (runbooks / "schedules.yaml").unlink()
    (runbooks / "remediation-drill.yaml").write_text(DRILL.format(endpoint=actions.url("actions", "drill")))
    actions.script("actions", "drill", Answer(500, "boom"), Answer(500, "boom"))
    worker_factory(
        **worker_env(tmp_path),
        OPSLOOP_RUNBOOKS_DIR=str(runbooks),
        OPSLOOP_SINK_REMEDIATION_ENABLED="true",
        OPSLOOP_REMEDIATION_TOKEN=TOKEN,
        OPSLOOP_SINK_BACKOFF_BASE_S="0.05",
        OPSLOOP_SINK_BACKOFF_MAX_S="0.1",
    )
    fired = alert("RemediationDrill", source="alertmanager", at=now_ms(), session="acme:alert:RemediationDrill:cart")

    async def scenario() -> Topics:
        async with Topics(topics) as t:
            await t.push([fired])

            def escalated(t: Topics) -> bool:
                failed = {d["event_id"] for d in t.decisions() if d["type"] == "remediation.failed"}
                return any(
                    e["type"] == "notify" and e["event_id"] in failed and e["notify"]["receiver"] == "oncall-slack"
                    for e in t.effects()
                )

            await t.until(escalated, timeout=90, what="the failure event decided and the escalation effect")
        return t

    t = asyncio.run(scenario())
    [effect] = [e for e in t.effects() if e["type"] == "remediate"]
    assert (effect["remediate"]["retries"], effect["remediate"]["timeout_ms"]) == (1, 2000)
    calls = actions.got("actions", "drill")
    assert [c.answered for c in calls] == [500, 500]  # retries: 1 → two attempts, then it gave up
    assert {c.headers["Idempotency-Key"] for c in calls} == {effect["effect_id"]}
    [decision] = [d for d in t.decisions() if d["type"] == "remediation.failed"]
    assert decision["outcome"] == "escalated" and decision["runbook"] == "remediation-drill"
    assert decision["matched"]["remediation"] == "restart-drill"
    assert decision["matched"]["remediation_effect"] == effect["effect_id"]
    assert decision["matched"]["remediation_attempts"] == "2"
    [notice] = [e for e in t.effects() if e["event_id"] == decision["event_id"] and e["type"] == "notify"]
    assert notice["notify"]["title"].startswith("Escalated (remediation restart-drill failed")
    assert notice["created_at"] < fired["occurred_at"] + 30 * 60_000  # now, not at the 30m step
