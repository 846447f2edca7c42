"""The delivery ledger's contract, one suite run against SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from agents.sinks.ledger import ClaimState, Ledger, LedgerConflictError
from streams.db import make_engine


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path) -> Ledger:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path}/ledger.db")
        yield Ledger(engine).create()
        engine.dispose()
    else:
        yield Ledger(request.getfixturevalue("pg_engine")).create()


LEASE = 60_000


def test_first_claim_sends_and_a_completed_row_is_never_sent_again(ledger: Ledger) -> None:
    assert ledger.claim("e1", "slack-a", "slack", "w1", 1000, LEASE).state is ClaimState.NEW
    ledger.complete("e1", "slack-a", "w1", status="delivered", attempts=2, http_status=200, error=None, now_ms=1500)
    again = ledger.claim("e1", "slack-a", "slack", "w2", 2000, LEASE)
    assert again.state is ClaimState.DONE and again.status == "delivered" and again.attempts == 2
    row = ledger.get("e1", "slack-a")
    assert (row.owner, row.http_status, row.completed_at) == ("w1", 200, 1500)


def test_key_is_effect_and_receiver(ledger: Ledger) -> None:
    assert ledger.claim("e1", "slack-a", "slack", "w1", 0, LEASE).state is ClaimState.NEW
    assert ledger.claim("e1", "pd", "pagerduty", "w1", 0, LEASE).state is ClaimState.NEW
    assert ledger.claim("e2", "slack-a", "slack", "w1", 0, LEASE).state is ClaimState.NEW
    assert len(ledger.rows()) == 3


def test_live_claim_is_busy_then_stale_after_its_lease(ledger: Ledger) -> None:
    ledger.claim("e1", "r", "slack", "w1", 1000, LEASE)
    assert ledger.claim("e1", "r", "slack", "w2", 1000 + LEASE - 1, LEASE).state is ClaimState.BUSY
    stale = ledger.claim("e1", "r", "slack", "w2", 1000 + LEASE, LEASE)
    assert stale.state is ClaimState.STALE and stale.claims == 2
    with pytest.raises(LedgerConflictError):  # the old owner can no longer complete it
        ledger.complete("e1", "r", "w1", status="delivered", attempts=1, http_status=200, error=None, now_ms=0)
    ledger.complete("e1", "r", "w2", status="ambiguous", attempts=1, http_status=None, error="timeout", now_ms=0)
    assert ledger.get("e1", "r").status == "ambiguous"


def test_own_claim_is_resumed_and_ambiguity_is_counted(ledger: Ledger) -> None:
    ledger.claim("e1", "r", "slack", "w1", 0, LEASE)
    assert ledger.claim("e1", "r", "slack", "w1", 10, LEASE).state is ClaimState.NEW
    ledger.record_ambiguous("e1", "r", "w1")
    ledger.record_ambiguous("e1", "r", "w1")
    assert ledger.get("e1", "r").ambiguous == 2
    with pytest.raises(ValueError):
        ledger.complete("e1", "r", "w1", status="claimed", attempts=1, http_status=None, error=None, now_ms=0)


def test_racing_takeovers_of_a_stale_claim_have_one_winner(ledger: Ledger) -> None:
    ledger.claim("e1", "r", "slack", "dead", 0, 1)
    results: list[ClaimState] = []
    barrier = threading.Barrier(6)

    def take(owner: str) -> None:
        barrier.wait()
        results.append(ledger.claim("e1", "r", "slack", owner, LEASE + 10, LEASE).state)

    threads = [threading.Thread(target=take, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(s.value for s in results) == ["busy"] * 5 + ["stale"]
    assert ledger.get("e1", "r").claims == 2


def test_release_gives_back_only_our_unfinished_claim(ledger: Ledger) -> None:
    ledger.claim("e1", "r", "slack", "w1", 0, LEASE)
    assert not ledger.release("e1", "r", "w2")
    assert ledger.release("e1", "r", "w1") and ledger.get("e1", "r") is None
    assert ledger.claim("e1", "r", "slack", "w2", 1, LEASE).state is ClaimState.NEW
    ledger.complete("e1", "r", "w2", status="delivered", attempts=1, http_status=200, error=None, now_ms=2)
    assert not ledger.release("e1", "r", "w2") and ledger.get("e1", "r").status == "delivered"
