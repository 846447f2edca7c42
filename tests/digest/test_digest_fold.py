"""The digest's table value: items grouped by org, folded per local day, idempotent under
redelivery, pruned; the due day; the routed effects with stable ids."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from agents.sinks.channels import specs
from streams.core.digest import (
    DigestCounts,
    caught_up,
    delta,
    digest_effects,
    due_digest,
    fold_delta,
    group_items,
    org_of_session,
    utc_ms,
)
from streams.kafka.codec import default_codec
from streams.model.routing import load_routing

TZ = "Europe/Berlin"


def decision(org: str, session: str, outcome: str, at: int) -> dict:
    return {"org": org, "session_key": session, "outcome": outcome, "decided_at": at}


def receipt(session: str, channel: str, status: str, at: int) -> dict:
    return {"effect_id": "e", "session_key": session, "channel": channel, "status": status, "completed_at": at}


def test_group_items_by_org_keeps_source_positions_and_leaves_out_digest_receipts():
    at = utc_ms(2026, 11, 21, 10)
    records = [
        ("decisions", 3, 10, decision("acme", "acme:alert:a", "notified", at)),
        ("deliveries", 1, 7, receipt("acme:alert:a", "slack", "delivered", at)),
        ("deliveries", 1, 8, receipt("acme:digest", "slack", "delivered", at)),  # a digest's own receipt
        ("decisions", 0, 4, decision("globex", "globex:scan:x", "recorded", at)),
        ("deliveries", 2, 9, receipt("nokey", "log", "delivered", at)),  # no org prefix: default
        ("decisions", 5, 1, decision("sandbox", "sandbox:x", "notified", at)),
    ]
    items = group_items(records, enabled=lambda org: org != "sandbox")
    assert sorted(items) == ["acme", "default", "globex"]
    assert [(i["topic"], i["partition"], i["offset"], i["status"], i["channel"]) for i in items["acme"]] == [
        ("decisions", 3, 10, "notified", ""),
        ("deliveries", 1, 7, "delivered", "slack"),
    ]
    assert org_of_session("acme:pr:repo#1") == "acme" and org_of_session(":x") == "default"
    encoded = default_codec().encode("opsloop.DigestDelta", delta("acme", items["acme"]))
    assert default_codec().decode(encoded)["items"] == items["acme"]


def test_fold_counts_per_local_day_once_under_redelivery_and_prunes():
    day_items = [
        ("decisions", 0, 1, decision("acme", "acme:a", "notified", utc_ms(2026, 11, 21, 8))),
        ("decisions", 0, 2, decision("acme", "acme:a", "repeat", utc_ms(2026, 11, 21, 9))),
        ("decisions", 1, 1, decision("acme", "acme:b", "duplicate", utc_ms(2026, 11, 21, 9))),
        ("deliveries", 0, 5, receipt("acme:a", "slack", "delivered", utc_ms(2026, 11, 21, 9))),
        ("deliveries", 0, 6, receipt("acme:a", "pagerduty", "failed", utc_ms(2026, 11, 21, 9))),
        ("deliveries", 0, 7, receipt("acme:a", "teams", "dead", utc_ms(2026, 11, 21, 9))),
        ("deliveries", 0, 8, receipt("acme:a", "slack", "skipped", utc_ms(2026, 11, 21, 9))),
        # 23:30 UTC on the 21st is the 22nd in Berlin
        ("decisions", 1, 2, decision("acme", "acme:c", "notified", utc_ms(2026, 11, 21, 23, 30))),
    ]
    first = delta("acme", group_items(day_items, lambda _o: True)["acme"])
    now = utc_ms(2026, 11, 22, 0)
    state = fold_delta(None, first, tz=TZ, partition=4, now_ms=now)
    again = fold_delta(state, first, tz=TZ, partition=4, now_ms=now)  # the whole delta redelivered
    assert again == state
    # a later batch overlapping the first (a collector restarted from an older commit)
    overlap = delta(
        "acme",
        group_items(
            day_items[-2:] + [("decisions", 0, 3, decision("acme", "acme:a", "repeat", utc_ms(2026, 11, 21, 10)))],
            lambda _o: True,
        )["acme"],
    )
    state = fold_delta(state, overlap, tz=TZ, partition=4, now_ms=now)
    day = DigestCounts.from_dict(state["days"]["2026-11-21"])
    assert day.events == 3 and day.outcomes == Counter(notified=1, repeat=2, duplicate=1)
    assert day.sessions == Counter({"acme:a": 3})
    assert (day.notifications, day.failures, day.dead) == (Counter(slack=1), Counter(pagerduty=1), Counter(teams=1))
    assert DigestCounts.from_dict(state["days"]["2026-11-22"]).events == 1
    assert state["hwm"] == {"decisions:0": 3, "decisions:1": 2, "deliveries:0": 8} and state["p"] == 4

    # the sent mark; a day older than KEEP_DAYS is pruned; a decision of a sent day counts today, a receipt's is dropped
    state = fold_delta(state, delta("acme", [], sent_day="2026-11-21"), tz=TZ, partition=4, now_ms=now)
    assert state["last_sent"] == "2026-11-21"
    late = delta(
        "acme",
        group_items(
            [
                ("decisions", 0, 9, decision("acme", "acme:a", "notified", utc_ms(2026, 11, 20))),
                ("deliveries", 0, 9, receipt("acme:a", "slack", "delivered", utc_ms(2026, 11, 20))),
            ],
            lambda _o: True,
        )["acme"],
    )
    later = utc_ms(2026, 11, 25, 12)
    state = fold_delta(state, late, tz=TZ, partition=4, now_ms=later)
    assert sorted(state["days"]) == ["2026-11-22", "2026-11-25"] and state["hwm"]["decisions:0"] == 9
    today = DigestCounts.from_dict(state["days"]["2026-11-25"])
    assert today.events == 1 and not today.notifications
    assert (
        fold_delta(state, delta("acme", [], sent_day="2026-11-01"), tz=TZ, partition=4, now_ms=later)["last_sent"]
        == "2026-11-21"
    )


def test_due_once_the_local_hour_has_come_for_a_day_with_traffic_and_not_sent():
    state = {"p": 0, "last_sent": None, "hwm": {}, "days": {"2026-11-21": DigestCounts(events=2).to_dict()}}
    tz = "America/New_York"
    assert due_digest(state, utc_ms(2026, 11, 22, 12), 8, tz) is None  # 07:00 in New York
    day, counts = due_digest(state, utc_ms(2026, 11, 22, 14), 8, tz)
    assert (day, counts.events) == ("2026-11-21", 2)
    assert due_digest({**state, "last_sent": "2026-11-21"}, utc_ms(2026, 11, 22, 14), 8, tz) is None
    # the 22nd had no traffic: nothing to send for it
    assert due_digest({**state, "last_sent": "2026-11-21"}, utc_ms(2026, 11, 23, 14), 8, tz) is None


def test_days_missed_while_no_worker_ran_go_out_late_oldest_first_never_out_of_order():
    days = {d: DigestCounts(events=n).to_dict() for d, n in (("2026-11-19", 1), ("2026-11-20", 2), ("2026-11-22", 4))}
    state = {"p": 0, "last_sent": "2026-11-18", "hwm": {}, "days": days}
    tz = "America/New_York"
    early = utc_ms(2026, 11, 23, 12)  # 07:00 in New York on the 23rd, before the hour
    sent = []
    while (due := due_digest(state, early, 8, tz)) is not None:  # overdue days do not wait for the hour
        sent.append((due[0], due[1].events))
        state = {**state, "last_sent": due[0]}
    assert sent == [("2026-11-19", 1), ("2026-11-20", 2)]  # the 21st was quiet; the 22nd waits for 08:00
    assert due_digest(state, utc_ms(2026, 11, 23, 14), 8, tz)[0] == "2026-11-22"
    # a day older than the last one sent is never sent (a late record of a quiet day)
    late = {**state, "last_sent": "2026-11-22", "days": {**days, "2026-11-21": DigestCounts(events=1).to_dict()}}
    assert due_digest(late, utc_ms(2026, 11, 23, 14), 8, tz) is None


def test_effects_follow_the_routing_tree_with_stable_ids(tmp_path: Path):
    path = tmp_path / "routing.yaml"
    path.write_text(
        "receivers:\n  - {name: ops-teams, channel: teams, secrets: {webhook_url: X}}\n"
        "  - {name: mail, channel: email, settings: {host: h, from: a@b.c, to: [d@e.f]}}\n"
        "route:\n  receiver: log\n  routes:\n"
        "    - matchers: ['category=\"digest\"', 'org=\"acme\"']\n      receiver: ops-teams\n      continue: true\n"
        "    - matchers: ['category=\"digest\"', 'org=\"acme\"']\n      receiver: mail\n"
        "    - matchers: ['severity=\"info\"']\n      receiver: log\n"
    )
    routing = load_routing(path, channels=specs())
    counts = DigestCounts(events=1)
    acme = digest_effects("acme", "2026-11-21", counts, routing, created_at=1)
    assert [(e["notify"]["receiver"], e["notify"]["channel"]) for e in acme] == [
        ("ops-teams", "teams"),
        ("mail", "email"),
    ]
    assert len({e["effect_id"] for e in acme}) == 2
    assert [e["effect_id"] for e in digest_effects("acme", "2026-11-21", counts, routing, created_at=99)] == [
        e["effect_id"] for e in acme
    ]  # sent again later: the same ids, one delivery each
    other = digest_effects("globex", "2026-11-21", counts, routing, created_at=1)
    assert [(e["notify"]["receiver"], e["session_key"]) for e in other] == [("log", "globex:digest")]


def test_the_barrier_waits_for_every_partition_with_records_and_not_for_empty_ones():
    ends = {("decisions", 0): 10, ("decisions", 1): 0, ("deliveries", 0): 3}
    assert not caught_up({("decisions", 0): 10}, ends)  # deliveries[0] never committed
    assert not caught_up({("decisions", 0): 9, ("deliveries", 0): 3}, ends)
    assert caught_up({("decisions", 0): 12, ("deliveries", 0): 3}, ends)  # decisions[1] is empty


def test_a_decision_about_an_alert_that_arrived_after_its_days_digest_went_out_is_counted_in_todays():
    """An alert that started at 23:50 and reached opsloop at 10:00 the next day (Prometheus re-sending
    after an outage) is notified then; its decision carries the alert's time. Its day's digest went
    out at 08:00, so it used to be counted in a day no digest would report again."""
    state = fold_delta(None, delta("acme", [], sent_day="2026-11-21"), tz=TZ, partition=0, now_ms=None)
    late = delta(
        "acme",
        group_items(
            [("decisions", 3, 40, decision("acme", "acme:late", "notified", utc_ms(2026, 11, 21, 22, 50)))],
            lambda _o: True,
        )["acme"],
    )
    state = fold_delta(state, late, tz=TZ, partition=0, now_ms=utc_ms(2026, 11, 22, 9))
    assert sorted(state["days"]) == ["2026-11-22"]
    assert DigestCounts.from_dict(state["days"]["2026-11-22"]).outcomes == Counter(notified=1)
    # before its day's digest went out it counts in its own day, as always
    fresh = fold_delta(None, late, tz=TZ, partition=0, now_ms=utc_ms(2026, 11, 22, 9))
    assert sorted(fresh["days"]) == ["2026-11-21"]
