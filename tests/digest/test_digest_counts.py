"""Must show (pure half): a digest for a day with known traffic shows the right counts."""

from __future__ import annotations

from collections import Counter

from streams.core.digest import DigestCounts, add_decision, add_delivery, day_of, digest_effect, utc_ms
from streams.kafka.codec import default_codec


def test_known_day_counts_render_and_encode():
    tz = "Europe/Berlin"
    counts: dict[tuple[str, str], DigestCounts] = {}
    decisions = (
        [{"org": "acme", "session_key": "acme:a", "outcome": "notified", "decided_at": utc_ms(2026, 11, 21, 8)}] * 3
        + [{"org": "acme", "session_key": "acme:b", "outcome": "repeat", "decided_at": utc_ms(2026, 11, 21, 9)}] * 5
        + [{"org": "acme", "session_key": "acme:b", "outcome": "duplicate", "decided_at": utc_ms(2026, 11, 21, 9)}] * 2
        # 23:30 UTC on the 21st is the 22nd in Berlin: another day
        + [{"org": "acme", "session_key": "acme:c", "outcome": "notified", "decided_at": utc_ms(2026, 11, 21, 23, 30)}]
        + [{"org": "other", "session_key": "other:x", "outcome": "notified", "decided_at": utc_ms(2026, 11, 21, 10)}]
    )
    for d in decisions:
        add_decision(counts.setdefault((d["org"], day_of(d["decided_at"], tz)), DigestCounts()), d)
    deliveries = (
        [("slack", "delivered")] * 3
        + [("email", "delivered"), ("pagerduty", "failed"), ("teams", "dead")]
        + [("remediate", "delivered"), ("remediate", "dry_run"), ("remediate", "dry_run"), ("remediate", "skipped")]
    )
    day = counts[("acme", "2026-11-21")]
    for channel, status in deliveries:
        add_delivery(day, {"channel": channel, "status": status})

    assert day.events == 8  # duplicates are not events
    assert day.outcomes == Counter(notified=3, repeat=5, duplicate=2)
    assert day.notifications == Counter(slack=3, email=1)  # an action called is not a notification
    assert day.actions == Counter(called=1, dry_run=2)
    assert day.failures == Counter(pagerduty=1) and day.dead == Counter(teams=1)
    assert day.sessions.most_common(1) == [("acme:b", 5)]
    assert counts[("acme", "2026-11-22")].events == 1 and counts[("other", "2026-11-21")].events == 1
    assert DigestCounts.from_json(day.to_json()) == day  # what the table stores

    effect = digest_effect("acme", "2026-11-21", day, channel="slack", receiver="infra-slack", created_at=1)
    assert effect["notify"]["fields"] == {"events": "8", "notifications": "4", "failures": "1", "dead_letters": "1"}
    body = effect["notify"]["body"].splitlines()
    assert body[body.index("Noisiest sessions:") + 1] == "- acme:b: 5 events"
    assert "Runbook actions: called 1, dry_run 2" in body
    decoded = default_codec().decode(default_codec().encode("opsloop.Effect", effect))
    assert (
        decoded["effect_id"] == effect["effect_id"]
        and decoded["notify"]["title"] == "Daily digest for acme: 2026-11-21"
    )


def test_a_storm_of_distinct_sessions_keeps_the_day_small_and_the_noisiest_exact():
    """50,000 distinct firing alerts in one org and day (512-character session keys, ingest's bound)
    and three noisy sessions among them: the stored day stays far below Kafka's 1 MB record limit
    (it once grew past it and crashed the worker), the events are all counted, the noisiest are exact."""
    from streams.core.digest import KEEP_DAYS, SESSIONS_KEPT, render

    day = DigestCounts()
    noisy = [f"acme:noisy-{i}" for i in range(3)]
    pad = "x" * 490
    for n in range(50_000):
        add_decision(day, {"session_key": f"acme:{pad}:{n:06d}", "outcome": "notified"})
        if n % 400 == 399:  # each noisy session fires all along the storm: 125 events
            for key in noisy:
                add_decision(day, {"session_key": key, "outcome": "notified"})
    assert [day.sessions[k] for k in noisy] == [125, 125, 125]  # exact, though trimmed around
    assert day.events == 50_000 + 3 * 125
    assert len(day.sessions) <= 2 * SESSIONS_KEPT and day.other_sessions >= 50_000 - 2 * SESSIONS_KEPT
    assert len(day.to_json()) * KEEP_DAYS < 500_000  # every kept day of the org's row together
    top = [key for key, _ in sorted(day.sessions.items(), key=lambda kv: (-kv[1], kv[0]))[:3]]
    assert sorted(top) == sorted(noisy)
    _, body, _ = render("acme", "2026-12-05", day)
    assert "Noisiest sessions (of more than 50,00" in body and "acme:noisy-2" in body
    assert DigestCounts.from_json(day.to_json()) == day
