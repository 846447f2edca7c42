"""Signed webhooks, parsed and verified: pure functions, no broker."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import secrets
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streams.devtools.broker import free_port
from streams.ingest.app import create_app
from streams.ingest.auth import hmac_sha256, verify_signature
from streams.ingest.errors import BadRequest, Forbidden, Unauthorized
from streams.ingest.fields import timestamp_ms
from streams.ingest.pipeline import INGEST
from streams.ingest.sessions import load_session_rules
from streams.ingest.webhooks import (
    PROVIDERS,
    Ignored,
    Provider,
    github_event,
    pagerduty_event,
    secret_variable,
    webhook_secrets,
)
from streams.model.records import derived_id
from streams.settings import IngestSettings, Settings

FIXTURES = Path(__file__).parent / "fixtures"
RULES = load_session_rules(Settings.from_env().sessions_path())
NOW = 1_714_557_800_000
PR = json.loads((FIXTURES / "github_pull_request_opened.json").read_text())
PD = json.loads((FIXTURES / "pagerduty_incident_acknowledged.json").read_text())
GH_HEADERS = {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}


def gh(body, headers=GH_HEADERS):
    raw = json.dumps(body).encode()
    return github_event(headers, raw, body, org="acme", received_at=NOW, rules=RULES)


def pd(body):
    raw = json.dumps(body).encode()
    return pagerduty_event({}, raw, body, org="acme", received_at=NOW, rules=RULES)


def test_signature_checks_the_raw_body():
    body = b'{"action":"opened"}'
    good = "sha256=" + hmac_sha256(b"s3cret", body)
    verify_signature(b"s3cret", body, good, header_name="X-Hub-Signature-256", prefix="sha256=")
    verify_signature(b"s3cret", body, good.upper().replace("SHA256=", "sha256="), header_name="X", prefix="sha256=")
    with pytest.raises(Forbidden, match="does not match"):
        verify_signature(b"s3cret", body + b" ", good, header_name="X-Hub-Signature-256", prefix="sha256=")
    with pytest.raises(Forbidden):
        verify_signature(b"other", body, good, header_name="X-Hub-Signature-256", prefix="sha256=")
    with pytest.raises(Forbidden):  # the right hex with the wrong scheme prefix
        verify_signature(b"s3cret", body, good.replace("sha256=", "sha1="), header_name="X", prefix="sha256=")
    with pytest.raises(Unauthorized, match="missing signature header X-Hub-Signature-256"):
        verify_signature(b"s3cret", body, None, header_name="X-Hub-Signature-256", prefix="sha256=")


def test_pagerduty_signature_header_may_carry_several_during_rotation():
    body = json.dumps(PD).encode()
    header = f"v1={hmac_sha256(b'old', body)},v1={hmac_sha256(b'new', body)}"
    verify_signature(b"new", body, header, header_name="X-PagerDuty-Signature", prefix="v1=")
    verify_signature(b"old", body, header, header_name="X-PagerDuty-Signature", prefix="v1=")
    with pytest.raises(Forbidden):
        verify_signature(b"third", body, header, header_name="X-PagerDuty-Signature", prefix="v1=")


def test_github_pull_request_opened():
    event = gh(PR)
    assert event["kind"] == "webhook" and event["type"] == "pr.opened" and event["source"] == "github"
    assert event["session_key"] == "acme:pr:acme/api#12" and event["session_rule"] == "pull-request"
    assert event["event_id"] == derived_id("webhook", "github", GH_HEADERS["X-GitHub-Delivery"])
    assert event["occurred_at"] == timestamp_ms("2024-05-01T09:58:11Z", "x")
    assert event["labels"]["repository"] == "acme/api" and event["labels"]["number"] == "12"
    assert event["labels"]["author"] == "octocat" and event["labels"]["base"] == "main"
    payload = event["payload"]
    assert payload["subject"] == "acme/api#12" and payload["actor"] == "octocat"
    assert payload["url"] == "https://github.com/acme/api/pull/12"
    assert json.loads(payload["body_json"]) == PR


def test_github_synchronize_and_closed_merged_share_the_session():
    sync = copy.deepcopy(PR)
    sync["action"] = "synchronize"
    closed = copy.deepcopy(PR)
    closed["action"] = "closed"
    closed["pull_request"].update(merged=True, closed_at="2024-05-01T11:00:00Z", updated_at="2024-05-01T11:00:00Z")
    a = gh(sync, {**GH_HEADERS, "X-GitHub-Delivery": "d-2"})
    b = gh(closed, {**GH_HEADERS, "X-GitHub-Delivery": "d-3"})
    assert (a["type"], b["type"]) == ("pr.synchronize", "pr.closed")
    assert a["session_key"] == b["session_key"] == "acme:pr:acme/api#12"
    assert b["labels"]["merged"] == "true" and b["occurred_at"] == timestamp_ms("2024-05-01T11:00:00Z", "x")
    assert a["event_id"] != b["event_id"]


def test_github_other_events_and_actions_are_ignored_not_errors():
    assert isinstance(gh({"zen": "Keep it simple.", "hook_id": 1}, {**GH_HEADERS, "X-GitHub-Event": "ping"}), Ignored)
    assert isinstance(gh({"ref": "refs/heads/main"}, {**GH_HEADERS, "X-GitHub-Event": "push"}), Ignored)
    labeled = {**PR, "action": "labeled"}
    assert "labeled" in gh(labeled).reason


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda b, h: h.pop("X-GitHub-Delivery"), "X-GitHub-Delivery"),
        (lambda b, h: h.pop("X-GitHub-Event"), "X-GitHub-Event"),
        (lambda b, h: b.pop("repository"), "repository"),
        (lambda b, h: b["repository"].pop("full_name"), "repository.full_name"),
        (lambda b, h: b.update(number="12"), "number"),
        (lambda b, h: b.update(pull_request=[]), "pull_request"),
        (lambda b, h: b["pull_request"].update(updated_at=1714557600), "pull_request.updated_at"),
    ],
)
def test_github_bad_deliveries_name_the_field(mutate, field):
    body, headers = copy.deepcopy(PR), dict(GH_HEADERS)
    mutate(body, headers)
    with pytest.raises(BadRequest) as err:
        gh(body, headers)
    assert err.value.field == field


def test_pagerduty_acknowledged_lands_in_the_session_that_paged():
    event = pd(PD)
    assert event["type"] == "incident.acknowledged" and event["kind"] == "webhook" and event["source"] == "pagerduty"
    assert event["session_key"] == "acme:alert:HostHighCpuLoad:checkout"  # the dedup key opsloop's sink sent
    assert event["session_rule"] == "pagerduty-dedup-key"
    assert event["event_id"] == derived_id("webhook", "pagerduty", "01BZ6PN0Q3UWWW0HBXTY41EOFZ")
    assert event["payload"]["action"] == "acknowledged" and event["payload"]["actor"] == "Tenex Engineer"
    assert event["labels"] == {
        "incident_id": "PGR0VU2",
        "status": "acknowledged",
        "urgency": "high",
        "service": "API Service",
        "incident_number": "2",
    }
    assert event["occurred_at"] == timestamp_ms("2024-05-01T10:02:22.169Z", "x")


def test_pagerduty_resolved_without_a_dedup_key_and_unhandled_types():
    body = copy.deepcopy(PD)
    body["event"].update(event_type="incident.resolved", id="01C")
    body["event"]["data"].update(status="resolved", incident_key=None)
    event = pd(body)
    assert event["type"] == "incident.resolved" and event["session_key"] == "acme:pagerduty:PGR0VU2"
    body["event"]["event_type"] = "incident.annotated"
    assert isinstance(pd(body), Ignored)
    body["event"]["event_type"] = "pagey.ping"
    assert isinstance(pd(body), Ignored)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda b: b.pop("event"), "event"),
        (lambda b: b["event"].pop("id"), "event.id"),
        (lambda b: b["event"].update(event_type=5), "event.event_type"),
        (lambda b: b["event"].update(data="PGR0VU2"), "event.data"),
        (lambda b: b["event"]["data"].pop("id"), "event.data.id"),
        (lambda b: b["event"].update(occurred_at="soon"), "event.occurred_at"),
    ],
)
def test_pagerduty_bad_deliveries_name_the_field(mutate, field):
    body = copy.deepcopy(PD)
    mutate(body)
    with pytest.raises(BadRequest) as err:
        pd(body)
    assert err.value.field == field


# -- a provider is one entry of PROVIDERS ------------------------------------------------


def test_each_provider_secret_comes_from_the_variable_its_name_derives(monkeypatch):
    """The documented names keep working; a provider without its variable is off; values stay SecretStr."""
    assert [p.secret_variable for p in PROVIDERS.values()] == [
        "OPSLOOP_INGEST_WEBHOOK_SECRET_GITHUB",
        "OPSLOOP_INGEST_WEBHOOK_SECRET_PAGERDUTY",
    ]
    found = webhook_secrets(
        {"OPSLOOP_INGEST_WEBHOOK_SECRET_GITHUB": "gh-value", "OPSLOOP_INGEST_WEBHOOK_SECRET_PAGER": "x"}
    )
    assert list(found) == ["github"] and found["github"].get_secret_value() == "gh-value"
    assert "gh-value" not in repr(found) and "gh-value" not in str(found)
    monkeypatch.setenv("OPSLOOP_INGEST_WEBHOOK_SECRET_PAGERDUTY", "pd-value")  # os.environ by default
    monkeypatch.delenv("OPSLOOP_INGEST_WEBHOOK_SECRET_GITHUB", raising=False)
    assert {k: v.get_secret_value() for k, v in webhook_secrets().items()} == {"pagerduty": "pd-value"}
    with pytest.raises(ValueError, match="names an env var"):
        Provider("git-tea", "X-Sig", "", github_event)


def forgejo_event(headers, raw, body, *, org, received_at, rules):
    return Ignored(f"forgejo {headers.get('X-Forgejo-Event')} seen")


def test_a_provider_added_as_one_entry_gets_its_secret_from_the_derived_variable(monkeypatch, caplog):
    """A provider nobody else names: no settings field, no list in app.py; the variable follows from the name."""
    monkeypatch.setitem(PROVIDERS, "forgejo", Provider("forgejo", "X-Forgejo-Signature", "", forgejo_event))
    assert secret_variable("forgejo") == "OPSLOOP_INGEST_WEBHOOK_SECRET_FORGEJO"
    secret = f"fj-{secrets.token_hex(16)}"
    body = b'{"ref": "refs/heads/main"}'
    signed = {
        "X-Forgejo-Signature": hmac_sha256(secret.encode(), body),
        "X-Forgejo-Event": "push",
        "Content-Type": "application/json",
    }
    # No broker: the publisher's start-up finds nothing on this port, and nothing here produces.
    settings = Settings(KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}", topic_prefix="nobroker.")
    caplog.set_level(logging.DEBUG)

    async def run(environ, *, change_after_start=None):
        app = create_app(settings, IngestSettings(), environ=environ)
        if change_after_start:
            environ.update(change_after_start)
        async with TestClient(TestServer(app)) as client:
            answers = []
            for headers in (signed, {**signed, "X-Forgejo-Signature": hmac_sha256(b"wrong", body)}):
                answer = await client.post("/ingest/webhook/forgejo", data=body, headers=headers)
                answers.append((answer.status, await answer.json()))
            return answers, repr(app[INGEST])

    environ = {"OPSLOOP_INGEST_WEBHOOK_SECRET_FORGEJO": secret}
    answers, shown = asyncio.run(run(environ, change_after_start={"OPSLOOP_INGEST_WEBHOOK_SECRET_FORGEJO": "rotated"}))
    assert answers[0] == (202, {"status": "ignored", "reason": "forgejo push seen"})  # read once, at start
    assert answers[1][0] == 403
    assert secret not in shown and secret not in caplog.text

    answers, _ = asyncio.run(run({}))
    assert answers[0] == (
        404,
        {"error": "webhook provider 'forgejo' is not enabled (set OPSLOOP_INGEST_WEBHOOK_SECRET_FORGEJO)"},
    )
