"""Fixtures of the sink tests: fake services, a real SMTP server, receivers pointing at them."""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from streams.model.receivers import RateLimit, Receiver
from tests.sinks.fakes import FakeServices

SECRETS = {
    "OPSLOOP_TEST_SLACK_URL": None,  # filled with the fake's URL (a webhook URL is the secret)
    "OPSLOOP_TEST_TEAMS_URL": None,
    "OPSLOOP_TEST_PD_KEY": "R0UT1NGKEY0123456789abcdefSECRET",  # 32 characters, as PagerDuty's
    "OPSLOOP_TEST_HOOK_KEY": "hmac-signing-key-SECRET-5f1d2c",
    "OPSLOOP_TEST_SMTP_PASSWORD": "smtp-password-SECRET-9a8b",
}
WEBHOOK_KEY = SECRETS["OPSLOOP_TEST_HOOK_KEY"]


@pytest.fixture(scope="module")
def fakes() -> Iterator[FakeServices]:
    services = FakeServices(webhook_keys={"hooks": WEBHOOK_KEY}).start()
    yield services
    services.stop()


def receivers_for(
    fakes: FakeServices, smtp_port: int | None = None, *, rate: RateLimit | None = None, ca_file: str | None = None
) -> tuple[dict[str, Receiver], dict[str, str]]:
    """Receivers named after the fake endpoints (slack-a, slack-b, teams, pd, hooks, mail, log) and their env."""
    env = {k: v for k, v in SECRETS.items() if v}
    receivers: dict[str, Receiver] = {}
    for name in ("slack-a", "slack-b", "slack-c"):
        var = f"OPSLOOP_TEST_{name.upper().replace('-', '_')}_URL"
        env[var] = fakes.url("slack", name)
        receivers[name] = Receiver(name, "slack", {"mention_groups": ["S0123ABC"]}, {"webhook_url": var}, rate)
    env["OPSLOOP_TEST_TEAMS_URL"] = fakes.url("teams", "teams")
    receivers["teams"] = Receiver("teams", "teams", {}, {"webhook_url": "OPSLOOP_TEST_TEAMS_URL"}, rate)
    receivers["pd"] = Receiver(
        "pd", "pagerduty", {"url": fakes.url("pagerduty", "pd")}, {"routing_key": "OPSLOOP_TEST_PD_KEY"}, rate
    )
    receivers["hooks"] = Receiver(
        "hooks", "webhook", {"url": fakes.url("hook", "hooks")}, {"signing_key": "OPSLOOP_TEST_HOOK_KEY"}, rate
    )
    if smtp_port is not None:
        settings = {
            "host": "127.0.0.1",
            "port": smtp_port,
            "security": "starttls" if ca_file else "none",
            "from": "opsloop <opsloop@example.com>",
            "to": ["oncall@example.com"],
            "username": "opsloop",
        }
        if ca_file:
            settings["ca_file"] = ca_file
        receivers["mail"] = Receiver(
            "mail", "email", settings, {"password": "OPSLOOP_TEST_SMTP_PASSWORD"} if ca_file else {}, rate
        )
    receivers["log"] = Receiver("log", "log")
    return receivers, env


# -- SMTP ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (openssl), for STARTTLS and implicit TLS."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


class MailSink:
    """aiosmtpd handler: keeps each message parsed with the modern email policy."""

    def __init__(self) -> None:
        self.messages = []
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.envelopes.append(envelope)
        self.messages.append(
            BytesParser(policy=policy.default).parsebytes(envelope.original_content or envelope.content)
        )
        return "250 Message accepted for delivery"


class Authenticator:
    def __init__(self, user: str, password: str) -> None:
        self.user, self.password, self.attempts = user, password, []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.user
            and auth_data.password.decode() == self.password
        )
        self.attempts.append(ok)
        return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def smtp_server(tls_cert: tuple[str, str]) -> Iterator[tuple[int, MailSink, Authenticator]]:
    """A real SMTP server (aiosmtpd) requiring STARTTLS and AUTH, on a free port."""
    from aiosmtpd.controller import Controller

    cert, key = tls_cert
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sink, auth = MailSink(), Authenticator("opsloop", SECRETS["OPSLOOP_TEST_SMTP_PASSWORD"])
    port = free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=auth,
    )
    controller.start()
    yield port, sink, auth
    controller.stop()


@pytest.fixture(scope="module")
def ca_file(tls_cert: tuple[str, str]) -> str:
    return tls_cert[0]


def parse(path: Path):
    return BytesParser(policy=policy.default).parsebytes(path.read_bytes())


# -- worker start-up -----------------------------------------------------------------


@pytest.fixture
def app_topics(topics):
    """The catalogue's topics plus the faust app's table changelogs, created before a worker starts
    (tests/support/changelogs.py says why)."""
    from tests.support.changelogs import create_changelog_topics

    create_changelog_topics(topics)
    return topics
