"""The harness's judgement on records it is handed (fast tier): what counts as lost, duplicated,
an allowed ambiguous repeat, or a difference the stated rule explains.

The scenarios themselves need a broker (``test_reduced.py``, ``python -m tests.faults``); these
check that the invariants they report on can fail.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest

from tests.faults import harness


def notice(eid: str, session: str = "acme:s1", event: str = "e1") -> SimpleNamespace:
    value = {
        "effect_id": eid,
        "event_id": event,
        "session_key": session,
        "type": "notify",
        "notify": {"channel": "slack", "receiver": "infra-slack", "action": "trigger", "title": f"t {session}"},
    }
    return SimpleNamespace(topic="outbox", value=value)


def decided(event: str, fallback: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        topic="decisions", value={"event_id": event, "decision_id": f"d-{event}", "fallback": fallback}
    )


def receipt(eid: str, status: str = "delivered", error: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(topic="deliveries", value={"effect_id": eid, "status": status, "error": error})


def judge(records: list, taken: Counter, *, budget: int = 0, events=("e1",), oracle=None) -> harness.Report:
    obs = harness.Observed()
    obs.add(records)
    oracle = harness.oracle_of(obs) if oracle is None else oracle
    before = len(harness.REPORTS)
    rep = harness.report(
        "t", [{"event_id": e} for e in events], obs, oracle, taken, faults=Counter(), ambiguous_budget=budget, started=0
    )
    del harness.REPORTS[before:]  # not part of a session's printed report
    return rep


def test_a_clean_run_passes():
    harness.check(judge([decided("e1"), notice("x"), receipt("x")], Counter(x=1)))


def test_an_undecided_event_is_lost():
    rep = judge([decided("e1"), notice("x"), receipt("x")], Counter(x=1), events=("e1", "e2"))
    assert rep.lost == ["e2"]
    with pytest.raises(AssertionError, match="1 events lost"):
        harness.check(rep)


def test_a_second_request_is_a_duplicate_unless_its_outcome_was_unknown_and_a_fault_allows_it():
    plain = [decided("e1"), notice("x"), receipt("x")]
    with pytest.raises(AssertionError, match="duplicate deliveries"):
        harness.check(judge(plain, Counter(x=2), budget=1))
    unknown = [*plain[:2], receipt("x", error="delivered after 1 timeout(s) with unknown outcome: may be duplicated")]
    with pytest.raises(AssertionError, match="duplicate deliveries"):
        harness.check(judge(unknown, Counter(x=2), budget=0))  # no injected fault to account for it
    rep = judge(unknown, Counter(x=2), budget=1)
    assert rep.ambiguous == ["x"] and not rep.duplicated
    harness.check(rep)
    with pytest.raises(AssertionError, match="duplicate deliveries"):
        harness.check(judge(unknown, Counter(x=3), budget=5))  # one repeat per fault, never two


def test_the_same_notice_under_another_id_pairs_by_the_rule_but_a_second_copy_does_not():
    oracle = harness.oracle_of(_obs([notice("x")]))
    rep = judge([decided("e1"), notice("y"), receipt("y")], Counter(y=1), oracle=oracle)
    assert (rep.missing, rep.extra, rep.explained) == (["x"], ["y"], 1)
    harness.check(rep)
    twice = [decided("e1"), notice("x"), receipt("x"), notice("y", event="e2"), receipt("y")]
    with pytest.raises(AssertionError, match="decided set differs"):
        harness.check(judge(twice, Counter(x=1, y=1), oracle=oracle))  # the notice sent twice


def test_an_effect_neither_delivered_nor_dead_lettered_fails():
    with pytest.raises(AssertionError, match="neither delivered nor dead-lettered"):
        harness.check(judge([decided("e1"), notice("x"), receipt("x")], Counter()))


def _obs(records: list) -> harness.Observed:
    obs = harness.Observed()
    obs.add(records)
    return obs
