"""Timer clocks, due timers, timer events and cron slots (the pure part of the ticker and scheduler)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.core.timers import (
    PartitionClock,
    clock_now,
    cron_event,
    due_slot,
    due_timers,
    slot_before,
    slots_between,
    timer_event,
    timer_event_id,
)
from streams.model.cron import CronError, validate_cron


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_clock_modes():
    assert clock_now("event", 500, 0.1, 9_999, 2.0) == 500
    assert clock_now("event", None, None, 9_999, 2.0) is None
    assert clock_now("wall", 500, 0.1, 9_999, 2.0) == 9_999
    # hybrid: the watermark while busy (capped at the wall clock), the wall clock once idle
    assert clock_now("hybrid", 500, 0.1, 9_999, 2.0) == 500
    assert clock_now("hybrid", 50_000, 0.1, 9_999, 2.0) == 9_999
    assert clock_now("hybrid", 500, 5.0, 9_999, 2.0) == 9_999
    assert clock_now("hybrid", None, None, 9_999, 2.0) == 9_999


def test_partition_clock_keeps_the_max_per_partition():
    c = PartitionClock()
    c.observe(1, 100, monotonic=10.0)
    c.observe(1, 50, monotonic=11.0)
    c.observe(2, 700, monotonic=11.0)
    assert c.now(1, "event", 2.0) == 100 and c.now(2, "event", 2.0) == 700 and c.now(3, "event", 2.0) is None
    assert c.now(1, "hybrid", 2.0, wall_ms=10_000, monotonic=12.0) == 100
    assert c.now(1, "hybrid", 2.0, wall_ms=10_000, monotonic=20.0) == 10_000


def test_due_timers_only_on_active_partitions_oldest_first():
    entries = [
        (
            "s1",
            {
                "p": 0,
                "org": "a",
                "t": {
                    "esc:1:1": {"at": 300, "purpose": "escalation", "step": 1, "data": {}},
                    "grp:1": {"at": 100, "purpose": "group", "step": 0, "data": {}},
                },
            },
        ),
        ("s2", {"p": 1, "org": "a", "t": {"grp:1": {"at": 50, "purpose": "group", "step": 0, "data": {}}}}),
        ("s3", {"p": 2, "org": "a", "t": {"grp:1": {"at": 10, "purpose": "group", "step": 0, "data": {}}}}),
        ("s4", None),
    ]
    clocks = {0: 200, 1: 1000, 2: 1000}
    due = due_timers(entries, clocks.get, active={0, 1})
    assert [(s, t) for s, _, t, _ in due] == [("s2", "grp:1"), ("s1", "grp:1")]


def test_timer_event_id_is_deterministic_and_depends_on_the_due_time():
    spec = {"at": 123, "purpose": "group", "step": 0, "data": {"b": "2", "a": "1"}}
    e1 = timer_event("s", "acme", "grp:1", spec, received_at=1)
    e2 = timer_event("s", "acme", "grp:1", spec, received_at=999)
    assert e1["event_id"] == e2["event_id"] == timer_event_id("s", "grp:1", 123)
    assert timer_event_id("s", "grp:1", 124) != e1["event_id"]
    assert e1["occurred_at"] == 123 and e1["payload"]["due_at"] == 123 and list(e1["payload"]["data"]) == ["a", "b"]
    from streams.kafka.codec import default_codec

    codec = default_codec()
    assert codec.decode(codec.encode("opsloop.Event", e1))["payload"]["timer_id"] == "grp:1"


def test_timers_entry_mirrors_pending_timers():
    from streams.core.tables import timers_entry

    assert timers_entry({}, 3, "acme") is None
    entry = timers_entry({"b": {"at": 2}, "a": {"at": 1}}, 3, "acme")
    assert entry == {"p": 3, "org": "acme", "t": {"a": {"at": 1}, "b": {"at": 2}}}


def test_cron_slots_and_catch_up():
    expr = "0 6 * * *"
    assert slot_before(expr, "UTC", ms("2024-03-05T07:30:00")) == ms("2024-03-05T06:00:00")
    assert slot_before(expr, "UTC", ms("2024-03-05T06:00:00")) == ms("2024-03-05T06:00:00")
    assert slots_between(expr, "UTC", ms("2024-03-01T06:00:00"), ms("2024-03-04T06:00:00")) == [
        ms("2024-03-02T06:00:00"),
        ms("2024-03-03T06:00:00"),
        ms("2024-03-04T06:00:00"),
    ]
    assert due_slot(expr, "UTC", ms("2024-03-05T07:30:00"), catch_up_ms=2 * 3_600_000) == ms("2024-03-05T06:00:00")
    assert due_slot(expr, "UTC", ms("2024-03-05T09:30:00"), catch_up_ms=2 * 3_600_000) is None


def test_cron_in_a_time_zone():
    # 06:00 in Berlin is 05:00 UTC in winter
    assert slot_before("0 6 * * *", "Europe/Berlin", ms("2024-01-10T12:00:00")) == ms("2024-01-10T05:00:00")


def test_a_schedule_on_a_spring_forward_night_runs_its_skipped_slot_once_after_the_change_never_early():
    # Berlin, 29 March 2026: 02:00 local (01:00 UTC) becomes 03:00; there is no 02:30.
    berlin, daily = "Europe/Berlin", "30 2 * * *"
    night = slots_between(daily, berlin, ms("2026-03-28T12:00:00"), ms("2026-03-29T12:00:00"))
    assert night == [ms("2026-03-29T01:00:00")]  # 03:00 local, the first minute after the change
    # at 02:59 (winter time) the last slot was yesterday's; croniter alone said 03:30 of today (still to come)
    assert slot_before(daily, berlin, ms("2026-03-29T00:59:00")) == ms("2026-03-28T01:30:00")
    assert slot_before(daily, berlin, ms("2026-03-29T01:10:00")) == ms("2026-03-29T01:00:00")
    assert due_slot(daily, berlin, ms("2026-03-29T00:59:00"), catch_up_ms=3_600_000) is None


def test_a_schedule_on_a_fall_back_night_runs_a_fixed_time_once_and_an_hourly_one_every_real_hour():
    # Berlin, 25 October 2026: 03:00 local (01:00 UTC) goes back to 02:00; 02:00-03:00 is lived twice.
    berlin = "Europe/Berlin"
    start, end = ms("2026-10-24T21:30:00"), ms("2026-10-25T04:30:00")
    assert slots_between("30 2 * * *", berlin, start, end) == [ms("2026-10-25T00:30:00")]
    hourly = [ms(f"2026-10-24T{h}:00:00") for h in (22, 23)] + [ms(f"2026-10-25T0{h}:00:00") for h in range(5)]
    assert slots_between("0 * * * *", berlin, start, end) == hourly  # croniter alone skipped 01:00 and 02:00 UTC
    # in the second 02:10, the last slot of "30 2" is the first 02:30 (croniter alone: 01:30 of the day before)
    assert slot_before("30 2 * * *", berlin, ms("2026-10-25T01:10:00")) == ms("2026-10-25T00:30:00")
    assert slot_before("0 * * * *", berlin, ms("2026-10-25T01:10:00")) == ms("2026-10-25T01:00:00")


@pytest.mark.parametrize(
    "tz,night",
    [
        ("Europe/Berlin", "2026-03-28T20:00:00"),
        ("Europe/Berlin", "2026-10-24T20:00:00"),
        ("America/New_York", "2026-03-08T00:00:00"),
        ("America/New_York", "2026-11-01T00:00:00"),
        ("Australia/Lord_Howe", "2026-04-04T10:00:00"),  # a half-hour change
        ("Australia/Lord_Howe", "2026-10-03T10:00:00"),
    ],
)
def test_the_last_slot_is_never_to_come_and_no_slot_lies_between_it_and_now_across_a_dst_change(tz, night):
    for expr in ("30 2 * * *", "0 2 * * *", "0 * * * *", "*/15 * * * *", "45 1 * * *", "30 1,2,3 * * *"):
        slots = slots_between(expr, tz, ms(night) - 86_400_000, ms(night) + 36_000_000)
        assert slots == sorted(set(slots)), expr
        for k in range(0, 120):  # ten hours, every five minutes (and five minutes and seven seconds)
            now = ms(night) + k * 300_000 + (7_000 if k % 2 else 0)
            last = slot_before(expr, tz, now)
            assert last <= now and last in slots, (expr, now)
            assert not slots_between(expr, tz, last, now), (expr, now)


@pytest.mark.parametrize(
    "expr,tz", [("61 * * * *", "UTC"), ("every day", "UTC"), ("0 6 * * *", "Nowhere/Land"), (None, "UTC")]
)
def test_invalid_cron(expr, tz):
    with pytest.raises(CronError):
        validate_cron(expr, tz)


@pytest.mark.parametrize("expr", ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 11 *"])
def test_a_cron_that_never_fires_is_refused_at_load_not_at_its_first_tick(expr):
    """croniter parses 30 February and raises only when asked for a slot: in the worker's scheduler, every tick."""
    with pytest.raises(CronError, match="never fires"):
        validate_cron(expr, "Europe/Berlin")
    validate_cron("0 0 29 2 *", "Europe/Berlin")  # a leap day comes
    validate_cron("30 2 * * *", "Europe/Berlin")  # skipped once a year when clocks go forward, but fires


def test_cron_event_ids_are_deterministic_per_slot():
    a = cron_event("acme:schedule:x", "acme", "x", 1000, 5)
    b = cron_event("acme:schedule:x", "acme", "x", 1000, 6)
    c = cron_event("acme:schedule:x", "acme", "x", 2000, 6)
    assert a["event_id"] == b["event_id"] != c["event_id"]
    assert a["payload"]["purpose"] == "cron" and a["payload"]["data"] == {"schedule": "x", "slot": "1000"}
