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
from tests.decide.helpers import MIN, SESSION, T0, URGENT_DOWN, Sim, alert, scan, starter_set, webhook  # noqa: E402

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


def _follow(query: dict[str, str], at: int) -> dict:
    """The event ingest produces for a link's POST (verified as ingest verifies it)."""
    link = verify_action_query(query, "s3cret", now_ms=at)
    return action_event(
        action=link.action,
        session=link.session,
        org=link.org,
        actor="signed link",
        unique=link.link_id,
        now=at,
        via="link",
        episode=link.episode,
    )


def test_a_link_of_an_ended_incident_does_not_act_on_the_next_one():
    """A link is given for the incident its message told of. Before, an Approve link of a drift scan's first
    incident, followed after the drift was fixed and found again (within the link's 24 h), ran the next
    incident's waiting remediation; an Acknowledge link of a resolved alert stopped the escalation of the
    alert's next firing. Now each link signs its episode, and decide does nothing for another one."""
    sim = Sim(_ctx(DRIFT))
    first = sim.feed(scan("findings", at=T0, findings=FINDINGS))
    old = _links(next(e for e in first.effects if e["type"] == "notify"))
    assert old["Approve"]["episode"] == "1"
    sim.feed(scan("clean", at=T0 + 10 * MIN))
    second = sim.feed(scan("findings", at=T0 + 7 * 60 * MIN, findings=FINDINGS))  # past the runbook's 6 h cooldown
    new = _links(next(e for e in second.effects if e["type"] == "notify"))
    assert new["Approve"]["episode"] == "2"
    d = sim.feed(_follow(old["Approve"], T0 + 7 * 60 * MIN + MIN))
    assert d.record["outcome"] == "stale-action" and not [e for e in d.effects if e["type"] == "remediate"]
    assert "incident #1" in d.record["matched"]["stale_action"]
    d = sim.feed(_follow(new["Approve"], T0 + 7 * 60 * MIN + 2 * MIN))
    assert d.record["outcome"] == "remediating" and [e for e in d.effects if e["type"] == "remediate"]

    alerts = Sim(_ctx(URGENT_DOWN))
    alerts.feed(alert(at=T0))
    alerts.advance(T0 + MIN)
    ack_one = _links(alerts.notifications()[0])["Acknowledge"]
    alerts.feed(alert(status="resolved", at=T0 + 2 * MIN))
    alerts.feed(alert(at=T0 + 3 * 60 * MIN))
    alerts.advance(T0 + 3 * 60 * MIN + MIN)
    d = alerts.feed(_follow(ack_one, T0 + 3 * 60 * MIN + 2 * MIN))
    assert d.record["outcome"] == "stale-action"
    alerts.advance(T0 + 3 * 60 * MIN + 30_000 + 5 * MIN)  # the second incident's chain goes on
    assert [n["notify"]["receiver"] for n in alerts.notifications("trigger")][-1] == "oncall-slack"
    ack_two = _links(alerts.notifications("trigger")[-1])["Acknowledge"]
    assert alerts.feed(_follow(ack_two, T0 + 3 * 60 * MIN + 6 * MIN)).record["outcome"] == "acknowledged"


def test_the_episode_is_signed_and_links_without_one_still_act_on_the_current_incident():
    sim = Sim(_ctx(URGENT_DOWN))
    sim.feed(alert(at=T0))
    sim.advance(T0 + MIN)
    query = _links(sim.notifications()[0])["Acknowledge"]
    with pytest.raises(AckLinkError, match="bad signature"):
        verify_action_query({**query, "episode": "2"}, "s3cret", now_ms=T0 + MIN)
    without = {k: v for k, v in query.items() if k != "episode"}
    with pytest.raises(AckLinkError, match="bad signature"):  # dropping it is altering the link too
        verify_action_query(without, "s3cret", now_ms=T0 + MIN)
    for bad in ("-1", "one", "1" * 19, "١"):
        with pytest.raises(AckLinkError, match="episode is not a number"):
            verify_action_query({**query, "episode": bad}, "s3cret", now_ms=T0 + MIN)
    # a link of the version before (no episode, signed as it was then) acts on the session as it did
    expires = T0 + 60 * MIN
    v2 = {
        "session": SESSION,
        "action": "ack",
        "org": "acme",
        "expires": str(expires),
        "jti": "j-v2",
        "sig": sign_ack(SESSION, expires, "s3cret", "ack", "j-v2", "acme"),
    }
    event = _follow(v2, T0 + 2 * MIN)
    assert "episode" not in event["labels"]
    assert sim.feed(event).record["outcome"] == "acknowledged"
