"""Signed acknowledge links."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from streams.core.acklinks import AckLinkError, ack_link, sign_ack, verify_ack, verify_ack_query


def test_sign_and_verify_round_trip():
    sig = sign_ack("acme:alert:x", 2_000, "k")
    verify_ack("acme:alert:x", 2_000, sig, "k", now_ms=1_000)
    assert sign_ack("acme:alert:x", 2_000, "k") == sig  # deterministic (decide stays replayable)


@pytest.mark.parametrize("session,expires,secret,now,reason", [
    ("acme:alert:y", 2_000, "k", 1_000, "bad signature"),
    ("acme:alert:x", 2_001, "k", 1_000, "bad signature"),
    ("acme:alert:x", 2_000, "other", 1_000, "bad signature"),
    ("acme:alert:x", 2_000, "k", 2_001, "link expired"),
])
def test_tampered_or_expired_links_fail(session, expires, secret, now, reason):
    sig = sign_ack("acme:alert:x", 2_000, "k")
    with pytest.raises(AckLinkError, match=reason):
        verify_ack(session, expires, sig, secret, now_ms=now)


def test_link_carries_no_secret_and_verifies_from_its_query():
    url = ack_link("https://opsloop.example.com/ack", "acme:alert:x", 5_000, "top-secret")
    assert "top-secret" not in url
    params = dict(parse_qsl(urlsplit(url).query))
    assert verify_ack_query(params, "top-secret", now_ms=4_000) == "acme:alert:x"
    with pytest.raises(AckLinkError, match="missing"):
        verify_ack_query({"session": "x"}, "top-secret", now_ms=0)


def test_no_secret_configured_is_an_error():
    with pytest.raises(AckLinkError, match="OPSLOOP_ACK_SECRET"):
        sign_ack("s", 1, "")
