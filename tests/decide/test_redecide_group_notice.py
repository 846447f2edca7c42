"""A group notice re-decided after a lost state write keeps its effect id, whichever event carries it.

The decide agent writes effects before states: a worker killed in between decides the same
events again from an older state, and on restart the timer events (events.timer) and the
session's other events interleave differently than the first time. A group flush can then
be carried by the ticker's ``grp:`` timer event once and, the second time, by a later
event of the session that performs the same flush inline (its timer's due time already
passed on the session's clock). The ledger delivers each effect id once, so the notice
must get the same id both ways, or it is sent twice (found by the fault harness).
"""

from __future__ import annotations

import copy
from dataclasses import replace

from streams.core.decide import TIMER_VERDICT, Context, Decision, Verdict, decide
from streams.core.timers import timer_event
from tests.decide.helpers import SESSION, T0, alert, starter_set, webhook

S = 1000
CTX = Context(runbooks=starter_set(), verdict=Verdict(category="availability", severity="urgent"))


def fold(state: dict | None, event: dict) -> Decision:
    verdict = TIMER_VERDICT if event["kind"] == "timer" else CTX.verdict
    return decide(copy.deepcopy(state), event, replace(CTX, verdict=verdict))


def ticker_event(state: dict, timer_id: str) -> dict:
    """The timer.fired event the ticker promotes for a pending timer of ``state``."""
    return timer_event(
        SESSION, "acme", timer_id, state["timers"][timer_id], received_at=state["timers"][timer_id]["at"]
    )


def notices(*decisions: Decision) -> list[dict]:
    return [e for d in decisions for e in d.all_effects if e["type"] == "notify"]


def what(e: dict) -> tuple:
    n = e["notify"]
    return (n["channel"], e["session_key"], n["receiver"], n["action"], n["title"], n["dedupe_key"])


def test_group_update_keeps_its_effect_id_when_a_later_event_flushes_it_inline():
    a1 = alert(at=T0)
    a2 = alert(instance="api-2:9100", at=T0 + 40 * S)  # joins the group after its first notice

    # First run: the ticker promotes grp:1 (first notice), a2 reschedules grp:1 at sent +
    # group_interval, and the ticker's timer event for that carries the update.
    d1 = fold(None, a1)
    t1 = ticker_event(d1.state, "grp:1")
    d_t1 = fold(d1.state, t1)
    d2 = fold(d_t1.state, a2)
    t2 = ticker_event(d2.state, "grp:1")
    d_t2 = fold(d2.state, t2)
    first = notices(d1, d_t1, d2, d_t2)
    assert notices(d2) == []  # a2 only reschedules the group's timer
    update = [e for e in first if e["event_id"] == t2["event_id"]]
    assert update and all("(+1 more)" in e["notify"]["title"] for e in update)

    # The kill: the effects of a2 and t2 were written, the state after a2 was not. The restarted
    # worker decides from the state after t1, and reads t2 (events.timer) before a2 (events.telemetry).
    again_t2 = fold(d_t1.state, t2)  # folds esc:1:1 (due first) as its timer event; grp:1 is stale here
    assert again_t2.record["outcome"] == "stale-timer"
    again_a2 = fold(again_t2.state, a2)  # the session's clock passed the group's due time: a2 flushes inline
    inline = [e for e in notices(again_a2) if e["event_id"] == a2["event_id"]]
    assert [what(e) for e in inline] == [what(e) for e in update]  # the same notice...
    assert [e["effect_id"] for e in inline] == [e["effect_id"] for e in update]  # ...under the same id
    # whatever both runs decided, one notice is one effect id: the ledger sends each once
    ids: dict[tuple, set[str]] = {}
    for e in first + notices(again_t2, again_a2):
        ids.setdefault(what(e), set()).add(e["effect_id"])
    assert {k: v for k, v in ids.items() if len(v) > 1} == {}
    assert again_a2.record["effect_ids"] == [e["effect_id"] for e in again_a2.effects]
    assert fold(again_t2.state, a2).effects == again_a2.effects  # still deterministic


def test_inline_flush_ids_differ_from_the_carrying_events_and_ordinals_stay_unique():
    a1 = alert(at=T0)
    a2 = alert(instance="api-2:9100", at=T0 + 40 * S)
    d1 = fold(None, a1)
    d_t1 = fold(d1.state, ticker_event(d1.state, "grp:1"))
    late = fold(fold(d_t1.state, ticker_event(fold(d_t1.state, a2).state, "grp:1")).state, a2)
    ids = [e["effect_id"] for e in late.all_effects]
    assert len(ids) == len(set(ids))


def test_first_notice_keeps_its_id_when_an_ack_of_another_topic_is_folded_before_the_alert():
    """Found by the fault harness (SIGKILL ×3 mid-stream): the same trigger notice sent twice.

    An alert (events.telemetry) and its ack (events.webhook) have no order in Kafka: the decide
    agent read the ack first in one run and last in another, and a worker killed between its
    effects and its state write decides again in whichever order the restarted consumer reads.
    With the ack first, the session's clock stood at the ack's time when the alert opened the
    episode, so the group waited from there: another due time, another ``grp:`` timer event id,
    another effect id for the same notice, and the ledger (keyed by effect id) sent both."""
    a1 = alert(at=T0)
    repeats = [alert(at=T0 + i * 60 * S) for i in (1, 2, 3)]
    ack = webhook("ack", at=T0 + 3 * 60 * S + 500, actor="oncall")

    def run(events: list[dict]) -> list[Decision]:
        state, out = None, []
        for event in events:
            out.append(fold(state, event))
            state = out[-1].state
        return out

    alerts_first = notices(*run([a1, *repeats, ack]))
    ack_first = notices(*run([ack, a1, *repeats]))
    assert [what(e) for e in alerts_first] == [what(e) for e in ack_first]  # the same notice...
    assert [e["effect_id"] for e in alerts_first] == [e["effect_id"] for e in ack_first]  # ...under one id
