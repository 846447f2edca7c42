"""A presented credential with bytes that are not UTF-8 (aiohttp hands them over as lone surrogates) or text that
is not ASCII is a wrong credential: every door that checks one answered 500 with a traceback (a hostile probe)."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from streams.api.auth import ApiAuth, AuthError
from streams.core.acklinks import AckLinkError, sign_ack, verify_ack
from streams.credentials import same_credential
from streams.ingest.auth import TokenAuth, verify_signature
from streams.ingest.errors import Forbidden, Unauthorized
from streams.ingest.slack import verify_request
from streams.ui.auth import SessionSigner, same_token

LATIN1_BYTE = "\udce9"  # what aiohttp makes of the byte 0xe9 in a header (surrogateescape)
TOKEN = "tok-0123456789abcdef"


@pytest.mark.parametrize("presented", [f"Bearer {LATIN1_BYTE}{TOKEN}", "Bearer é" + TOKEN, "Bearer \ud800"])
def test_a_bearer_token_that_is_not_utf8_or_ascii_is_a_wrong_token(presented):
    with pytest.raises(Forbidden, match="invalid token"):
        TokenAuth({"p": TOKEN.encode()}).check(presented)
    with pytest.raises(AuthError) as refused:
        ApiAuth({"alice": TOKEN}).check(presented)
    assert refused.value.status == 401


def test_signatures_and_macs_that_are_not_ascii_do_not_match():
    body, secret = b"{}", b"webhook-secret-0123456789"
    with pytest.raises(Forbidden, match="does not match"):
        verify_signature(
            secret, body, "sha256=" + LATIN1_BYTE * 64, header_name="X-Hub-Signature-256", prefix="sha256="
        )
    expires = int(time.time() * 1000) + 60_000
    assert sign_ack("acme:s", expires, "ack-secret-0123456789")  # the real one signs
    with pytest.raises(AckLinkError, match="bad signature"):
        verify_ack("acme:s", expires, "é" * 64, "ack-secret-0123456789", now_ms=expires - 1)
    signer = SessionSigner(b"k" * 32)
    assert signer.read(f"{LATIN1_BYTE}abc.def") is None and signer.read(f"abc.{LATIN1_BYTE}") is None
    assert same_token(LATIN1_BYTE, "csrf") is False and same_credential("é", b"e") is False


def test_a_slack_request_with_a_timestamp_no_float_holds_or_a_signature_not_ascii_is_refused():
    now, secret = time.time(), b"slack-signing-secret"
    with pytest.raises(Unauthorized, match="not epoch seconds"):
        verify_request(secret, {"X-Slack-Request-Timestamp": "9" * 400, "X-Slack-Signature": "v0=00"}, b"", now)
    with pytest.raises(Forbidden, match="does not match"):
        headers = {"X-Slack-Request-Timestamp": str(int(now)), "X-Slack-Signature": "v0=" + LATIN1_BYTE * 64}
        verify_request(secret, headers, b"", now)
    good = "v0=" + hmac.new(secret, f"v0:{int(now)}:".encode(), hashlib.sha256).hexdigest()
    verify_request(secret, {"X-Slack-Request-Timestamp": str(int(now)), "X-Slack-Signature": good}, b"", now)
