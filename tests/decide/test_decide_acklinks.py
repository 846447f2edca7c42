"""Signed acknowledge links."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from streams.core.acklinks import AckLinkError, ack_link, sign_ack, verify_ack, verify_ack_query


def test_sign_and_verify_round_trip():
    sig = sign_ack("acme:alert:x", 2_000, "k")
    verify_ack("acme:alert:x", 2_000, sig, "k", now_ms=1_000)
    assert sign_ack("acme:alert:x", 2_000, "k") == sig  # deterministic (decide stays replayable)


@pytest.mark.parametrize(
    "session,expires,secret,now,reason",
    [
        ("acme:alert:y", 2_000, "k", 1_000, "bad signature"),
        ("acme:alert:x", 2_001, "k", 1_000, "bad signature"),
        ("acme:alert:x", 2_000, "other", 1_000, "bad signature"),
        ("acme:alert:x", 2_000, "k", 2_001, "link expired"),
    ],
)
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


# -- action links in messages (pure decide) -------------------------------------------

from urllib.parse import parse_qsl as _qsl  # noqa: E402

from streams.core.acklinks import verify_action_query  # noqa: E402
from streams.core.decide import Context, Verdict, decide  # noqa: E402
from streams.ingest.actions import action_event  # noqa: E402
from streams.model.silences import silence_from_event  # noqa: E402
from tests.decide.helpers import MIN, T0, URGENT_DOWN, Sim, alert, scan, starter_set, webhook  # noqa: E402

BASE = "https://opsloop.example.com/ingest/ack"
DRIFT = Verdict(category="config_drift", severity="warning")
FINDINGS = [
    {"resource": "aws_s3_bucket.logs", "change_type": "update", "rule": "", "severity": "medium", "detail": "acl"}
]


def _links(effect) -> dict[str, dict[str, str]]:
    return {link["label"]: dict(_qsl(urlsplit(link["url"]).query)) for link in effect["notify"]["links"]}


def _ctx(verdict, **kw) -> Context:
    return Context(verdict=verdict, runbooks=starter_set(), ack_base_url=BASE, ack_secret="s3cret", **kw)


def test_a_remediation_waiting_for_approval_gets_approve_and_reject_links():
    sim = Sim(_ctx(DRIFT))
    d = sim.feed(scan("findings", at=T0, findings=FINDINGS))
    [notice] = [e for e in d.effects if e["type"] == "notify"]
    links = _links(notice)
    assert list(links)[:3] == ["Acknowledge", "Approve", "Reject"]
    for label, action in (("Acknowledge", "ack"), ("Approve", "approve"), ("Reject", "reject")):
        verified = verify_action_query(links[label], "s3cret", now_ms=T0)
        assert (verified.action, verified.session, verified.org) == (action, "acme:scan:infra-live", "acme")
    assert len({q["jti"] for q in links.values() if "jti" in q}) == 3  # one id per link
    again = decide(None, scan("findings", at=T0, findings=FINDINGS), _ctx(DRIFT))  # pure: same event, same links
    assert [e for e in again.effects if e["type"] == "notify"][0]["notify"]["links"] == notice["notify"]["links"]


def test_no_approve_links_without_a_waiting_remediation():
    sim = Sim(_ctx(URGENT_DOWN))
    sim.feed(alert(at=T0))
    sim.advance(T0 + 5 * MIN)
    assert [list(_links(n)) for n in sim.notifications("trigger")][0][:1] == ["Acknowledge"]
    assert all("Approve" not in _links(n) for n in sim.notifications())


def test_reject_drops_the_waiting_remediation_and_approve_then_does_nothing():
    sim = Sim(_ctx(DRIFT))
    sim.feed(scan("findings", at=T0, findings=FINDINGS))
    d = sim.feed(webhook("remediation.rejected", at=T0 + MIN, session="acme:scan:infra-live", actor="signed link"))
    assert d.record["outcome"] == "rejected" and d.record["matched"]["rejected_by"] == "signed link"
    d = sim.feed(webhook("remediation.approved", at=T0 + 2 * MIN, session="acme:scan:infra-live", actor="bob"))
    assert not [e for e in d.effects if e["type"] == "remediate"]


def test_link_events_are_one_use_and_a_silence_link_mutes_the_session():
    session = "acme:alert:TargetDown:api"
    ack = action_event(
        action="ack", session=session, org="acme", actor="signed link", unique="j1", now=T0 + MIN, via="link"
    )
    assert ack == action_event(
        action="ack", session=session, org="acme", actor="signed link", unique="j1", now=T0 + MIN, via="link"
    )
    sim = Sim(_ctx(URGENT_DOWN))
    sim.feed(alert(at=T0))
    assert sim.feed(ack).record["outcome"] == "acknowledged"
    assert sim.feed(dict(ack, occurred_at=T0 + 2 * MIN)).record["outcome"] == "duplicate"  # the same link, posted again

    silence_ev = action_event(
        action="silence-1h", session=session, org="acme", actor="u1", unique="t1", now=T0, via="slack"
    )
    _, silence, _ = silence_from_event(silence_ev)
    assert silence.ends_at == T0 + 60 * MIN and silence.created_by == "u1"
    muted = Sim(_ctx(URGENT_DOWN, silences=(silence,)))
    muted.feed(alert(at=T0))
    muted.advance(T0 + 30 * MIN)
    assert muted.notifications() == []
    other = Sim(_ctx(URGENT_DOWN, silences=(silence,)))  # another session is not muted
    other.feed(alert(at=T0, session="acme:alert:TargetDown:web"))
    other.advance(T0 + 30 * MIN)
    assert other.notifications()
