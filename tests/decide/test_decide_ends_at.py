"""A firing alert whose sender stops re-sending it resolves at its endsAt (pure decide harness)."""

from __future__ import annotations

from streams.core.decide import Context
from tests.decide.helpers import MIN, T0, WARN_DOWN, Sim, alert, starter_set


def firing(ends_at: int | None, *, received: int, eid: str) -> dict:
    """What ingest makes of a Prometheus push: occurred_at is startsAt (T0) on every re-send, endsAt moves."""
    event = alert(at=T0, eid=eid)
    event["received_at"] = received
    event["payload"]["ends_at"] = ends_at
    return event


def sim() -> Sim:
    return Sim(Context(verdict=WARN_DOWN, runbooks=starter_set()))


def test_an_alert_not_re_sent_resolves_at_its_ends_at():
    s = sim()
    s.feed(firing(T0 + 4 * MIN, received=T0, eid="push-1"))
    assert s.pending()["ends:" + next(iter(s.state["alerts"]))]["at"] == T0 + 4 * MIN
    s.advance(T0 + 3 * MIN)
    assert [n["notify"]["action"] for n in s.notifications()] == ["trigger"]
    s.advance(T0 + 4 * MIN)
    assert [n["notify"]["action"] for n in s.notifications()] == ["trigger", "resolve"]
    event, record, _ = s.trace()[-1]
    assert event["payload"]["purpose"] == "ends" and record["outcome"] == "resolved"
    assert record["matched"]["ended"] == "endsAt passed without a re-send"
    assert s.state["status"] == "resolved" and not s.pending()


def test_every_re_send_moves_the_end():
    s = sim()
    s.feed(firing(T0 + 4 * MIN, received=T0, eid="push-1"))
    for k in range(1, 6):  # a re-send a minute, each with endsAt four minutes on
        d = s.feed(firing(T0 + (4 + k) * MIN, received=T0 + k * MIN, eid=f"push-{k + 1}"))
        assert d.record["outcome"] == "repeat"
    s.feed(firing(T0 + 7 * MIN, received=T0 + 5 * MIN, eid="late-older"))  # an older re-send never moves it back
    s.advance(T0 + 8 * MIN)
    assert [n["notify"]["action"] for n in s.notifications()] == ["trigger"]
    s.advance(T0 + 9 * MIN)  # the last re-send said 9m: the sender is gone
    assert [n["notify"]["action"] for n in s.notifications()] == ["trigger", "resolve"]


def test_a_resolve_cancels_the_end_and_no_ends_at_means_no_timer():
    s = sim()
    s.feed(firing(T0 + 4 * MIN, received=T0, eid="push-1"))
    s.advance(T0 + MIN)
    s.feed(alert(status="resolved", at=T0 + 2 * MIN))
    assert not [t for t in s.pending() if t.startswith("ends:")]
    s.advance(T0 + 10 * MIN)
    assert [n["notify"]["action"] for n in s.notifications()] == ["trigger", "resolve"]

    webhook_style = sim()  # Alertmanager's firing alerts carry no endsAt: nothing to wait for
    webhook_style.feed(firing(None, received=T0, eid="am-1"))
    assert not [t for t in webhook_style.pending() if t.startswith("ends:")]
