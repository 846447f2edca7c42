"""Whether pacing changes decisions: the timer clock modes (pure; see streams/core/timers.py).

The same events are fed twice through decide with the worker's ticker simulated on
:class:`~streams.core.timers.PartitionClock` (a tick every 0.5 s, idle after 2 s): once
back to back, once with a 30 s pause in the traffic. The events trail the wall clock
by 10 minutes (a backlog being caught up; a producer stamping its own times). Under
``event`` the two runs decide identically; under ``hybrid`` the pause makes the clock
jump to the wall clock, so a verification that the ack would have cancelled fires
during the pause and escalates.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from streams.core.decide import Context, Verdict, decide
from streams.core.timers import PartitionClock, due_timers, timer_event
from streams.model.runbooks import RunbookSet
from streams.settings import ClockMode
from tests.decide.helpers import MIN, SESSION, T0, WARN_CPU, alert, live_remediation_set, webhook

TICK_S, IDLE_S = 0.5, 2.0
LAG_MS = 10 * MIN  # the wall clock is this far ahead of the events' own times


def traffic() -> list[dict[str, Any]]:
    """High CPU fires (escalation: infra-slack now, oncall-slack after 5m), is acked 2 minutes later, resolves."""
    return [
        alert("HostHighCpuLoad", at=T0, session=SESSION),
        webhook("ack", at=T0 + 2 * MIN, session=SESSION),
        alert("HostHighCpuLoad", status="resolved", at=T0 + 3 * MIN, session=SESSION),
    ]


Folded = tuple[str, int, str, tuple[tuple[str, str, str], ...]]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> RunbookSet:
    """high-cpu's remediation run for real: a verification after a dry run changes nothing, escalates nothing."""
    return live_remediation_set(tmp_path_factory.mktemp("pacing"))


def run(live: RunbookSet, mode: ClockMode, pause_before: int | None, pause_s: float = 30.0) -> list[Folded]:
    """Feed ``traffic()`` one event a second (``pause_s`` more before event ``pause_before``), ticking between.

    Returns, for every decision: what was folded (event type or timer id), its event time (a timer's due
    time), the outcome and the notifications as (effect id, receiver, action).
    """
    ctx = Context(verdict=WARN_CPU, runbooks=live)
    clock, state, out = PartitionClock(), None, []
    t = 0.0

    def fold(event: dict[str, Any], verdict: Verdict) -> None:
        nonlocal state
        d = decide(state, event, replace(ctx, verdict=verdict))
        state = d.state
        clock.observe(0, event["occurred_at"], monotonic=t)
        for ev, record, effects in [*((f.event, f.record, f.effects) for f in d.fired), (event, d.record, d.effects)]:
            label = ev["payload"]["timer_id"] if ev["kind"] == "timer" else ev["type"]
            notes = tuple(
                (e["effect_id"], e["notify"]["receiver"], e["notify"]["action"])
                for e in effects
                if e["type"] == "notify"
            )
            out.append((label, int(ev["occurred_at"]), record["outcome"], notes))

    def tick_until(until_s: float) -> None:
        nonlocal t
        while t + TICK_S <= until_s:
            t += TICK_S
            now = clock.now(0, mode, IDLE_S, wall_ms=T0 + LAG_MS + int(t * 1000), monotonic=t)
            entry = {"p": 0, "org": "acme", "t": (state or {}).get("timers") or {}}
            for session, org, tid, spec in due_timers([(SESSION, entry)], lambda _p, now=now: now, {0}):
                if tid in ((state or {}).get("timers") or {}):  # an earlier fire in this tick may have cancelled it
                    fold(timer_event(session, org, tid, spec, received_at=T0 + LAG_MS), TIMER)

    arrival = 0.0
    for i, event in enumerate(traffic()):
        arrival += 1.0 + (pause_s if i == pause_before else 0.0)
        tick_until(arrival)
        t = arrival
        fold(event, WARN_CPU)
    return out


TIMER = Verdict(severity="info", classifier="none")


def notifications(decisions: list[Folded]) -> list[tuple[str, str, str]]:
    return [n for *_, notes in decisions for n in notes]


def test_event_clock_decides_the_same_whatever_the_pacing(live: RunbookSet) -> None:
    steady, paused = run(live, "event", None), run(live, "event", pause_before=1)
    assert paused == steady
    assert [n[1:] for n in notifications(steady)] == [("infra-slack", "trigger"), ("infra-slack", "resolve")]


def test_hybrid_clock_fires_during_a_pause_what_the_ack_would_have_cancelled(live: RunbookSet) -> None:
    steady, paused = run(live, "hybrid", None), run(live, "hybrid", pause_before=1)
    assert steady == run(live, "event", None)  # while busy, hybrid is the watermark: the same as event
    assert paused != steady
    # Where: idle for 2 s, the clock jumps to the wall clock (10 minutes ahead of the events), and the
    # ticker fires the verification (due 10m after the T0+30s notification) before the ack (T0+2m) is
    # folded; it finds the alert
    # still firing and escalates: one more message, which the steady run never sends.
    extra = [d for d in paused if d not in steady]
    assert [(label, at, outcome) for label, at, outcome, _ in extra] == [
        ("verify:1", T0 + 10 * MIN + 30_000, "escalated")
    ]
    assert [n[1:] for n in notifications(extra)] == [("infra-slack", "trigger")]
    ack = next(at for label, at, *_ in paused if label == "ack")
    assert extra[0][1] > ack and paused.index(extra[0]) < [d[0] for d in paused].index("ack")


@pytest.mark.parametrize("mode", ["event", "hybrid"])
def test_no_pause_no_difference_between_runs(live: RunbookSet, mode: ClockMode) -> None:
    assert run(live, mode, None) == run(live, mode, None)
