"""Where an effect goes: to ``outbox`` for a sink to act on, or onto its decision record.

A sink acts on ``notify`` and ``remediate`` effects. ``schedule_timer`` and ``cancel_timers``
are the session's own bookkeeping: decide keeps the pending timers in the session state, the
decide agent indexes them in the ``timers`` table and the ticker promotes them from there. No
sink delivers them, yet they were ~half of all records a worker produced (0.99 schedules per
event) and its sinks read every one back only to ignore it. So they ride on their decision
record instead (the Decision schema's ``timer_effects``), which the audit projector turns back
into the same effect rows the timeline has always shown.

A timer effect is kept compact on the record: the fields every effect shares with the decision
that made it (event id, session, org, event time) are the decision's, so only the effect's own
fields are stored; :func:`timer_effects` rebuilds the full effect, equal to the one decide made.
Effect ids do not change (the decision's ``effect_ids`` lists them all, in order).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Effects no sink acts on: recorded on the decision, never produced to outbox. Anything else goes
# to outbox (a type a sink does not know is dead-lettered or ignored there, never lost).
ON_DECISION = frozenset({"schedule_timer", "cancel_timers"})


def to_outbox(effect: Mapping[str, Any]) -> bool:
    """Does this effect go to ``outbox`` (a sink acts on it), rather than onto its decision record?"""
    return effect["type"] not in ON_DECISION


def recorded_timer_effects(effects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ``timer_effects`` of a decision record: its timer effects without the fields the decision holds."""
    return [
        {
            "effect_id": e["effect_id"],
            "type": e["type"],
            "runbook": e["runbook"],
            "timer": e["timer"],
            "cancel": e["cancel"],
        }
        for e in effects
        if e["type"] in ON_DECISION
    ]


def timer_effects(decision: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The timer effects a decision record carries, each as the full effect (an ``opsloop.Effect`` record)."""
    return [
        {
            "effect_id": t["effect_id"],
            "event_id": decision["event_id"],
            "session_key": decision["session_key"],
            "org": decision["org"],
            "type": t["type"],
            "created_at": decision["decided_at"],
            "runbook": t["runbook"],
            "notify": None,
            "timer": t["timer"],
            "cancel": t["cancel"],
            "remediate": None,
        }
        for t in decision.get("timer_effects") or ()
    ]
