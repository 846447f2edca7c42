"""Email through a real SMTP server (aiosmtpd): STARTTLS, AUTH, both MIME parts, threading headers."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import replace

from agents.sinks.channels.email import message_id, thread_id
from streams.model.receivers import Receiver
from tests.sinks.conftest import SECRETS, receivers_for
from tests.sinks.helpers import FAST, Harness, make_effect


def test_email_threads_one_incident_over_starttls_with_auth(fakes, smtp_server, ca_file, tmp_path) -> None:
    port, mail, auth = smtp_server
    receivers, env = receivers_for(fakes, smtp_port=port, ca_file=ca_file)
    trigger = make_effect(
        "mail",
        "email",
        severity="urgent",
        thread_key="incident-7",
        body="Memory is at 93%.\n\nFirst paragraph <b>not</b> HTML.",
    )
    resolve = make_effect(
        "mail",
        "email",
        severity="info",
        action="resolve",
        thread_key="incident-7",
        title="Host out of memory on node-1",
    )
    first = len(mail.messages)

    async def go():
        async with Harness(receivers, engine(tmp_path), env) as h:
            return await h.run(trigger), await h.run(resolve), h

    a, b, h = asyncio.run(go())
    assert a == b == ["delivered"]
    assert auth.attempts[-2:] == [True, True]
    m1, m2 = mail.messages[first : first + 2]
    assert m1["Subject"] == "[URGENT] Host out of memory on node-1"
    assert m2["Subject"] == "[INFO] Host out of memory on node-1"
    assert m1["Message-ID"] == message_id(trigger["effect_id"], "example.com")
    assert m2["Message-ID"] == message_id(resolve["effect_id"], "example.com")
    root = thread_id("incident-7", "example.com")
    assert m1["In-Reply-To"] == m2["In-Reply-To"] == root and m1["References"] == m2["References"] == root
    assert m1.get_content_type() == "multipart/alternative"
    parts = list(m1.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    plain, html = parts[0].get_content(), parts[1].get_content()
    assert (
        "[URGENT] Host out of memory" in plain
        and "instance: node-1:9100" in plain
        and "Runbook: https://runbooks" in plain
    )
    assert "&lt;b&gt;not&lt;/b&gt;" in html and '<a href="https://runbooks.example.com/host-memory">Runbook</a>' in html
    assert m2["X-Opsloop-Action"] == "resolve" and "Resolved" in list(m2.iter_parts())[0].get_content()
    assert mail.envelopes[first].rcpt_tos == ["oncall@example.com"]
    assert h.emitter.receipts[0]["http_status"] == 250


def test_email_wrong_password_is_permanent_and_the_password_is_not_in_the_reason(
    fakes, smtp_server, ca_file, tmp_path
) -> None:
    port, mail, auth = smtp_server
    receivers, env = receivers_for(fakes, smtp_port=port, ca_file=ca_file)
    env = {**env, "OPSLOOP_TEST_SMTP_PASSWORD": "wrong-password-value"}
    before = len(mail.messages)

    async def go():
        async with Harness(receivers, engine(tmp_path), env) as h:
            return await h.run(make_effect("mail", "email")), h

    statuses, h = asyncio.run(go())
    assert statuses == ["dead"] and len(mail.messages) == before
    assert "authentication failed" in h.emitter.dead[0]["reason"]
    assert "wrong-password-value" not in h.emitter.dead[0]["reason"] and h.emitter.receipts[0]["attempts"] == 1


def test_email_refuses_an_untrusted_certificate(fakes, smtp_server, tmp_path) -> None:
    """Without the CA the STARTTLS handshake fails: never fall back to plain text with a password."""
    port, mail, _ = smtp_server
    receivers, env = receivers_for(fakes, smtp_port=port, ca_file=str(tmp_path / "none.pem"))
    settings = {k: v for k, v in receivers["mail"].settings.items() if k != "ca_file"}
    receivers["mail"] = Receiver("mail", "email", settings, {"password": "OPSLOOP_TEST_SMTP_PASSWORD"})
    before = len(mail.messages)

    async def go():
        async with Harness(receivers, engine(tmp_path), env, policy=replace(FAST, max_attempts=1)) as h:
            return await h.run(make_effect("mail", "email")), h

    statuses, h = asyncio.run(go())
    assert statuses == ["dead"] and len(mail.messages) == before
    assert "TLS" in h.emitter.dead[0]["reason"]
    assert SECRETS["OPSLOOP_TEST_SMTP_PASSWORD"] not in h.emitter.dead[0]["reason"]


def test_implicit_tls_on_its_own_port(fakes, tls_cert, ca_file, tmp_path) -> None:
    from aiosmtpd.controller import Controller

    from tests.sinks.conftest import MailSink, free_port

    cert, key = tls_cert
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sink, port = MailSink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, ssl_context=context)
    controller.start()
    try:
        receiver = Receiver(
            "mail-tls",
            "email",
            {
                "host": "127.0.0.1",
                "port": port,
                "security": "tls",
                "ca_file": ca_file,
                "from": "opsloop@example.com",
                "to": "sre@example.com",
            },
            {},
        )

        async def go():
            async with Harness({"mail-tls": receiver}, engine(tmp_path), {}) as h:
                return await h.run(make_effect("mail-tls", "email", severity="warning"))

        assert asyncio.run(go()) == ["delivered"]
        assert sink.messages[0]["Subject"].startswith("[WARNING] ") and sink.envelopes[0].rcpt_tos == [
            "sre@example.com"
        ]
    finally:
        controller.stop()


def engine(tmp_path):
    from streams.db import make_engine

    return make_engine(f"sqlite:///{tmp_path}/ledger.db")


def test_crlf_in_alert_text_is_folded_into_the_subject_not_dead_lettered(fakes, smtp_server, ca_file, tmp_path) -> None:
    """Issue 16 item 5: CR/LF in alert or scan text that reaches the Subject used to raise
    "Header values may not contain linefeed" and dead-letter the email; now the breaks
    are folded into spaces, the mail is delivered, and no header can be injected."""
    port, mail, auth = smtp_server
    receivers, env = receivers_for(fakes, smtp_port=port, ca_file=ca_file)
    effect = make_effect(
        "mail",
        "email",
        title="Drift in prod\r\nBcc: victim@example.org\nX-Injected: 1",
        severity="warning\r\n",
        body="line one\r\nline two",
    )
    before = len(mail.messages)

    async def go():
        async with Harness(receivers, engine(tmp_path), env) as h:
            return await h.run(effect), h

    statuses, h = asyncio.run(go())
    assert statuses == ["delivered"], h.emitter.dead
    m = mail.messages[before]
    assert m["Subject"] == "[WARNING] Drift in prod Bcc: victim@example.org X-Injected: 1"
    assert m["Bcc"] is None and m["X-Injected"] is None
    assert "line two" in list(m.iter_parts())[0].get_content()
