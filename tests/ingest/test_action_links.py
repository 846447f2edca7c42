"""Signed action links end to end: decide signs them into a message, the sinks deliver it to a
real SMTP server, a real ingest on the real broker serves the confirmation page, and only the
page's POST produces the event."""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from streams.core.acklinks import action_link, link_id
from streams.core.decide import Context, Verdict
from streams.db import make_engine
from streams.kafka.producer import now_ms
from tests.decide.helpers import Sim, scan, starter_set
from tests.ingest.conftest import (
    apply_topics,
    ingest_env,
    read_all_events,
    read_events,
    settings_for,
)

# The sink tests' real SMTP server (aiosmtpd, STARTTLS + AUTH), its CA and fake services: fixtures.
from tests.sinks.conftest import ca_file, fakes, receivers_for, smtp_server, tls_cert  # noqa: F401
from tests.sinks.helpers import Harness

ACK_SECRET = f"ack-{secrets.token_hex(16)}"
WEBHOOK_TOPIC = ["events.webhook"]
COMPLIANCE = Verdict(category="compliance", severity="action", confidence=0.9, classifier="test-1")


@pytest.fixture(scope="module")
def module_env(kafka_bootstrap: str) -> dict[str, str]:
    env = ingest_env(kafka_bootstrap, f"l{uuid.uuid4().hex[:8]}.", OPSLOOP_ACK_SECRET=ACK_SECRET)
    apply_topics(settings_for(env))
    return env


def _delivered_email(base_url: str, session: str, smtp, services, ca: str, tmp_path: Path):
    """Fold a failed compliance scan through decide with ack links on (the starter runbooks route it
    to the ``oncall-email`` receiver), deliver decide's email effect unchanged through the sinks'
    dispatcher to the real SMTP server, and return (effect, message as received)."""
    ctx = Context(runbooks=starter_set(), verdict=COMPLIANCE, ack_base_url=base_url, ack_secret=ACK_SECRET)
    sim = Sim(ctx)
    at = now_ms()
    findings = [{"id": "cis-1.1", "severity": "high", "title": "root account has access keys"}]
    sim.feed(scan("failed", at=at, scan_type="compliance", findings=findings, session=session))
    (effect,) = [e for e in sim.notifications("trigger") if e["notify"]["channel"] == "email"]
    receiver = effect["notify"]["receiver"]

    port, mail, auth = smtp
    receivers, env = receivers_for(services, smtp_port=port, ca_file=ca)
    first = len(mail.messages)

    async def deliver() -> list[str]:
        mailer = {receiver: replace(receivers["mail"], name=receiver)}
        async with Harness(mailer, make_engine(f"sqlite:///{tmp_path}/ledger.db"), env) as h:
            return await h.run(effect)

    assert asyncio.run(deliver()) == ["delivered"]
    assert auth.attempts[-1] is True and mail.envelopes[first].rcpt_tos == ["oncall@example.com"]
    (message,) = mail.messages[first:]
    assert message["X-Opsloop-Effect-Id"] == effect["effect_id"]
    return effect, message


def _webhooks_of(settings, session: str, idle: float = 1.5) -> list[dict]:
    return [
        r.value for r in read_all_events(settings, idle=idle, topics=WEBHOOK_TOPIC) if r.value["session_key"] == session
    ]


def test_acknowledge_link_from_a_delivered_email(
    ingest_server,
    module_settings,
    http,
    smtp_server,  # noqa: F811
    fakes,  # noqa: F811
    ca_file: str,  # noqa: F811
    tmp_path: Path,
):
    session = f"acme:scan:linktest-{uuid.uuid4().hex[:6]}"
    effect, message = _delivered_email(ingest_server.url("/ingest/ack"), session, smtp_server, fakes, ca_file, tmp_path)
    text = message.get_body(("plain",)).get_content()
    # As received over SMTP the lines end in CRLF: read them line by line.
    links = dict(m.groups() for line in text.splitlines() if (m := re.fullmatch(r"(\w[\w ]*): (http\S+)", line)))
    assert "Acknowledge" in links, text
    ack = links["Acknowledge"]
    assert ack.startswith(ingest_server.url("/ingest/ack?"))
    assert ack == next(link["url"] for link in effect["notify"]["links"] if link["label"] == "Acknowledge")
    assert ACK_SECRET not in message.as_string()

    # GET (a mail scanner, a chat preview, the person) shows a page and changes nothing.
    page = http.get(ack)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Acknowledge" in page.text and "Nothing happens until you press the button" in page.text
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    assert '<form method="post"' in page.text
    assert _webhooks_of(module_settings, session) == []

    # The page's button: a form POST of the signed fields.
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text))
    done = http.post(ingest_server.url("/ingest/ack"), data=fields)
    assert done.status_code == 200, done.text
    assert "Acknowledged" in done.text and "signed link" in done.text
    records = read_events(
        module_settings, lambda rs: any(r.value["session_key"] == session for r in rs), topics=WEBHOOK_TOPIC
    )
    (event,) = [r.value for r in records if r.value["session_key"] == session]
    assert event["type"] == "ack" and event["org"] == "acme"
    assert event["payload"]["actor"] == "signed link"
    query = dict(parse_qsl(urlsplit(ack).query))
    assert event["payload"]["delivery_id"] == query["jti"]

    # One use: the same link again answers "already used" and produces nothing new.
    again = http.post(ingest_server.url("/ingest/ack"), data=fields)
    assert again.status_code == 409 and "already used" in again.text
    assert len(_webhooks_of(module_settings, session)) == 1

    # The delivered link altered (another session, action or id, a later expiry) is refused and
    # produces nothing; an expired one, signed as such, is refused in the test below.
    base = ingest_server.url("/ingest/ack")
    later = str(int(query["expires"]) + 86_400_000)
    altered = [
        {**query, "session": session + "x"},
        {**query, "action": "approve"},
        {**query, "jti": "other"},
        {**query, "expires": later},
    ]
    for bad in altered:
        assert http.get(f"{base}?{urlencode(bad)}").status_code == 403
        answer = http.post(base, data=bad)
        assert answer.status_code == 403 and "bad signature" in answer.text, answer.text
    assert len(_webhooks_of(module_settings, session)) == 1
    assert _webhooks_of(module_settings, session + "x") == []


def test_expired_or_altered_links_are_refused(ingest_server, module_settings, http):
    session = f"acme:alert:linktest:{uuid.uuid4().hex[:6]}"
    base = ingest_server.url("/ingest/ack")
    expired = action_link(
        base, session, "ack", now_ms() - 1_000, ACK_SECRET, jti=link_id("e", session, "ack"), org="acme"
    )
    good = action_link(
        base, session, "ack", now_ms() + 60_000, ACK_SECRET, jti=link_id("g", session, "ack"), org="acme"
    )
    params = dict(parse_qsl(urlsplit(good).query))
    altered_session = {**params, "session": session + "x"}
    altered_action = {**params, "action": "approve"}
    forged = action_link(base, session, "ack", now_ms() + 60_000, "not-the-secret", jti="j", org="acme")
    not_ascii = {**params, "sig": "é" * 64}  # hmac.compare_digest raised on non-ASCII text: a 500
    for method in ("get", "post"):
        answer = (
            http.get(expired) if method == "get" else http.post(base, data=dict(parse_qsl(urlsplit(expired).query)))
        )
        assert answer.status_code == 403 and "link expired" in answer.text
        for bad in (altered_session, altered_action, dict(parse_qsl(urlsplit(forged).query)), not_ascii):
            answer = http.get(f"{base}?{urlencode(bad)}") if method == "get" else http.post(base, data=bad)
            assert answer.status_code == 403 and "bad signature" in answer.text, answer.text
    assert _webhooks_of(module_settings, session) == []
    assert _webhooks_of(module_settings, session + "x") == []


def test_everything_shown_is_escaped(ingest_server, http):
    session = 'acme:<script>alert("x")</script>'
    link = action_link(
        ingest_server.url("/ingest/ack"),
        session,
        "silence-1h",
        now_ms() + 60_000,
        ACK_SECRET,
        jti="j1",
        org="<b>acme</b>",
    )
    page = http.get(link)
    assert page.status_code == 200
    assert "<script>" not in page.text and "&lt;script&gt;" in page.text and "<b>acme" not in page.text
    assert "silence for 1 hour" in page.text


def test_approve_link_produces_the_approval_once(ingest_server, module_settings, http):
    session = f"acme:alert:linktest:{uuid.uuid4().hex[:6]}"
    link = action_link(
        ingest_server.url("/ingest/ack"),
        session,
        "approve",
        now_ms() + 60_000,
        ACK_SECRET,
        jti=link_id("a", session, "approve"),
        org="acme",
    )
    assert "Approve remediation" in http.get(link).text
    fields = dict(parse_qsl(urlsplit(link).query))
    assert http.post(ingest_server.url("/ingest/ack"), data=fields).status_code == 200
    assert http.post(ingest_server.url("/ingest/ack"), data=fields).status_code == 409
    records = read_events(
        module_settings, lambda rs: any(r.value["session_key"] == session for r in rs), topics=WEBHOOK_TOPIC
    )
    (event,) = [r.value for r in records if r.value["session_key"] == session]
    assert event["type"] == "remediation.approved" and event["payload"]["actor"] == "signed link"
