"""Timers and cron schedules: the pure part (the ticker and scheduler agents are the shell).

A timer is ``{"at": fire_at_ms, "purpose": ..., "step": n, "data": {...}}`` under a
timer id in a session's state; the decide agent mirrors a session's pending timers
into the ``timers`` table (keyed by session) that the ticker scans. A due timer
becomes a ``timer.fired`` event on events.timer whose id is derived from the session,
the timer id and the due time, so a timer promoted twice (a restart, a rebalance)
is one event to decide, which skips ids it has seen and timers no longer pending.

Time is event time. Each partition has a watermark, the largest ``occurred_at``
folded on it. The ticker's clock for a partition (:func:`clock_now`):

- ``event``: the watermark alone. Deterministic; tests move time by sending events.
- ``wall``: the wall clock alone.
- ``hybrid`` (default): the watermark while the partition is busy (it folded an event
  in the last ``idle_s`` seconds), capped at the wall clock; the wall clock once it
  is idle. A backlog or a backfill is then judged in its own time (an ack that sits
  in the backlog is folded before the escalation it prevents fires), a quiet system
  still fires its timers on time, and an event stamped in the future cannot fire
  timers early.

Pacing (intended, and tested in tests/decide/test_timer_clock_pacing.py): under
``hybrid`` the outcome can depend on how the events were paced, not only on the
events. A pause of ``idle_s`` switches a partition to the wall clock; when the events
trail the wall clock (a backlog, a producer's own timestamps), timers due between the
watermark and the wall clock then fire before the events that follow the pause, even
when one of those events (an ack, a resolve) would have cancelled them: the same
events with a 30 s pause can send an escalation the steady run does not. ``hybrid``
is the default because a quiet system must still fire its timers (an escalation is
due precisely when nothing more arrives). ``event`` (``OPSLOOP_TIMER_CLOCK=event``)
makes outcomes a function of the events alone, whatever their pacing, at the price
that a partition's timers wait for its next event; it is what replay's re-runs and
what-if assume. Replay of a recorded run is exact under every mode all the same:
the ticker's fires are events on ``events.timer`` that decide records and replay
folds in the recorded order, and decide itself folds a session's due timers before
each event (:func:`streams.core.decide.decide`), so a timer never depends on when
the ticker got to it. What-if, which re-decides under a changed configuration,
predicts the ``event``-clock outcome; a live ``hybrid`` run with pauses can differ
from it where timers came due during a pause.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from streams.model.cron import zone_of
from streams.model.records import derived_id
from streams.settings import ClockMode

TIMER_FIRED = "timer.fired"


def clock_now(
    mode: ClockMode, watermark: int | None, idle_for_s: float | None, wall_ms: int, idle_after_s: float
) -> int | None:
    """The time a partition's timers are judged against (None: no time known yet)."""
    if mode == "wall":
        return wall_ms
    if mode == "event":
        return watermark
    if watermark is None or idle_for_s is None or idle_for_s >= idle_after_s:
        return wall_ms
    return min(watermark, wall_ms)


@dataclass
class PartitionClock:
    """Watermarks per partition, fed by the decide agent and read by the ticker (one process)."""

    watermarks: dict[int, int] = field(default_factory=dict)
    last_seen: dict[int, float] = field(default_factory=dict)

    def observe(self, partition: int, occurred_at: int, monotonic: float | None = None) -> None:
        if occurred_at > self.watermarks.get(partition, -1):
            self.watermarks[partition] = occurred_at
        self.last_seen[partition] = time.monotonic() if monotonic is None else monotonic

    def now(
        self,
        partition: int,
        mode: ClockMode,
        idle_after_s: float,
        wall_ms: int | None = None,
        monotonic: float | None = None,
    ) -> int | None:
        wall = int(time.time() * 1000) if wall_ms is None else wall_ms
        mono = time.monotonic() if monotonic is None else monotonic
        seen = self.last_seen.get(partition)
        return clock_now(
            mode, self.watermarks.get(partition), None if seen is None else mono - seen, wall, idle_after_s
        )


# -- timers -----------------------------------------------------------------------


def timer_event_id(session_key: str, timer_id: str, fire_at: int) -> str:
    return derived_id("timer", session_key, timer_id, str(fire_at))


def timer_event(session_key: str, org: str, timer_id: str, spec: Mapping[str, Any], received_at: int) -> dict[str, Any]:
    """The events.timer record for a due timer (occurred_at is the due time, not now)."""
    fire_at = int(spec["at"])
    return {
        "event_id": timer_event_id(session_key, timer_id, fire_at),
        "session_key": session_key,
        "session_rule": "timer",
        "kind": "timer",
        "type": TIMER_FIRED,
        "source": "opsloop",
        "org": org,
        "occurred_at": fire_at,
        "received_at": received_at,
        "labels": {},
        "annotations": {},
        "payload": {
            "timer_id": timer_id,
            "purpose": str(spec.get("purpose", "")),
            "due_at": fire_at,
            "step": int(spec.get("step", 0)),
            "data": {str(k): str(v) for k, v in sorted((spec.get("data") or {}).items())},
        },
    }


def due_timers(
    entries: Iterable[tuple[str, Mapping[str, Any]]], clock_of: Any, active: set[int]
) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(session_key, org, timer_id, spec) of every timer due on an active partition.

    ``clock_of(partition)`` gives the partition's clock (None: unknown, nothing due).
    Ordered by due time, so a backlog of timers is promoted oldest first.
    """
    out: list[tuple[int, str, str, str, dict[str, Any]]] = []
    clocks: dict[int, int | None] = {}
    for session_key, entry in entries:
        if not entry:
            continue
        partition = entry.get("p")
        if partition not in active:
            continue
        if partition not in clocks:
            clocks[partition] = clock_of(partition)
        now = clocks[partition]
        if now is None:
            continue
        for tid, spec in (entry.get("t") or {}).items():
            if int(spec["at"]) <= now:
                out.append((int(spec["at"]), session_key, entry.get("org", "default"), tid, dict(spec)))
    out.sort(key=lambda t: (t[0], t[1], t[3]))
    return [(s, o, t, spec) for _, s, o, t, spec in out]


# -- cron -----------------------------------------------------------------------------


def _slot_instants(naive: datetime, zone: Any, every_hour: bool) -> list[int]:
    """The instants (epoch ms) a wall-clock slot of a schedule stands for in ``zone``.

    As cron does: a slot in the hour a DST change skips runs at the first instant after
    the change (02:30 on a spring-forward night runs at 03:00), and a slot in the hour a
    change repeats runs once, at its first occurrence, or at both for a schedule that runs
    every hour (``0 * * * *`` runs each real hour; ``30 2 * * *`` runs once).
    """
    first = naive.replace(tzinfo=zone, fold=0)
    ms = int(first.timestamp() * 1000)
    second = int(naive.replace(tzinfo=zone, fold=1).timestamp() * 1000)
    if second == ms:
        return [ms]
    if datetime.fromtimestamp(ms / 1000, zone).replace(tzinfo=None) != naive:  # skipped: no instant reads it
        lo, hi = sorted((ms, second))
        while hi - lo > 1000:  # the first second whose wall clock is past the slot
            mid = (lo + hi) // 2000 * 1000
            if datetime.fromtimestamp(mid / 1000, zone).replace(tzinfo=None) >= naive:
                hi = mid
            else:
                lo = mid
        return [hi]
    return [ms, second] if every_hour else [min(ms, second)]


def _wall_clock(expr: str, tz: str, at_ms: int) -> tuple[Any, datetime, bool]:
    """(zone, ``at_ms`` on the zone's wall clock as a naive datetime, whether ``expr`` runs every hour)."""
    from croniter import croniter

    zone = zone_of(tz)
    local = datetime.fromtimestamp(at_ms / 1000, zone).replace(tzinfo=None)
    return zone, local, croniter(expr).expanded[1] == ["*"]


# Slots are counted on the zone's wall clock (croniter over naive datetimes, where no hour is
# skipped or repeated) and only then placed in time (_slot_instants): croniter 5's own time-zone
# arithmetic is wrong around DST changes. Seen in Berlin, 2026: on 29 March at 03:10 its previous
# slot of "30 2 * * *" was 03:30 (a scheduler ran the job 20 minutes early); on 25 October it went
# from 02:00+02:00 to 04:00+01:00 for "0 * * * *" (two runs of an hourly job lost) and, in the
# repeated hour, gave 01:30 of the day before as the last slot of "30 2 * * *" (no slot at all).
# croniter 6 fixes these, but faust's mode-streaming pins croniter < 6.
WALL_MARGIN = timedelta(hours=3)  # more than any zone's DST change: the wall clock's slots that can map near an instant
WALL_MARGIN_MS = WALL_MARGIN // timedelta(milliseconds=1)


def slot_before(expr: str, tz: str, now_ms: int) -> int:
    """The latest slot at or before ``now_ms`` (epoch ms), in the schedule's time zone."""
    from croniter import croniter

    zone, local, every_hour = _wall_clock(expr, tz, now_ms)
    offsets = {datetime.fromtimestamp((now_ms + d) / 1000, zone).utcoffset() for d in (-WALL_MARGIN_MS, WALL_MARGIN_MS)}
    if len(offsets) == 1:  # no DST change within the margin: the wall clock's order is time's
        # (get_prev excludes its start: start just after now)
        slot = _slot_instants(croniter(expr, local + timedelta(seconds=1)).get_prev(datetime), zone, every_hour)[0]
        if slot <= now_ms:
            return slot
    it = croniter(expr, local + WALL_MARGIN)
    best: int | None = None
    while True:  # in a repeated hour the wall clock's order is not time's: look a margin past the first found
        naive = it.get_prev(datetime)
        if best is not None and naive < local - WALL_MARGIN:
            return best
        for t in _slot_instants(naive, zone, every_hour):
            if t <= now_ms and (best is None or t > best):
                best = t


def slots_between(expr: str, tz: str, after_ms: int, until_ms: int, limit: int = 10_000) -> list[int]:
    """Slots in (after_ms, until_ms], oldest first (at most ``limit``)."""
    from croniter import croniter

    zone, local, every_hour = _wall_clock(expr, tz, after_ms)
    it = croniter(expr, local - WALL_MARGIN)
    found: set[int] = set()
    while len(found) < limit:  # in a repeated hour the wall clock's order is not time's: collect, then sort
        instants = _slot_instants(it.get_next(datetime), zone, every_hour)
        if min(instants) > until_ms + WALL_MARGIN_MS:
            break
        found.update(t for t in instants if after_ms < t <= until_ms)
    return sorted(found)[:limit]


def due_slot(expr: str, tz: str, now_ms: int, catch_up_ms: int) -> int | None:
    """The slot a scheduler should dispatch now: the latest one, if within the catch-up window.

    Older missed slots are coalesced into it (decide records how many were skipped),
    so a worker back from an outage runs a schedule once, not once per missed slot.
    """
    slot = slot_before(expr, tz, now_ms)
    return slot if now_ms - slot <= catch_up_ms else None


def cron_event(session_key: str, org: str, schedule: str, slot: int, received_at: int) -> dict[str, Any]:
    """A cron slot as a timer event (deterministic id: every worker would derive the same)."""
    spec = {"at": slot, "purpose": "cron", "step": 0, "data": {"schedule": schedule, "slot": str(slot)}}
    event = timer_event(session_key, org, f"cron:{schedule}:{slot}", spec, received_at)
    event["session_rule"] = "schedule"
    return event
