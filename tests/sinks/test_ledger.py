"""The delivery ledger's contract, one suite run against SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import threading

import pytest
import sqlalchemy as sa

from agents.sinks.ledger import SPILLED, ClaimRequest, ClaimState, Completion, Ledger, LedgerConflictError, Spill
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


# -- takeover by a newer consumer-group generation -------------------------------------------

OWNER_TIMEOUT = 10_000


def test_a_newer_generation_takes_over_a_dead_owners_claim_at_once(ledger: Ledger) -> None:
    ledger.beat("w1", 0)
    assert ledger.claim("e1", "r", "slack", "w1", 1000, LEASE, partition=3, generation=7).state is ClaimState.NEW
    # w1 was killed: it stops beating; the group rebalances and w2 reads partition 3 in generation 8.
    now = OWNER_TIMEOUT + 1  # far within the lease
    taken = ledger.claim("e1", "r", "slack", "w2", now, LEASE, partition=3, generation=8)
    assert (taken.state, taken.why, taken.claims) == (ClaimState.STALE, "generation", 2)
    row = ledger.get("e1", "r")
    assert (row.owner, row.claim_partition, row.claim_generation) == ("w2", 3, 8)
    with pytest.raises(LedgerConflictError):
        ledger.complete("e1", "r", "w1", status="delivered", attempts=1, http_status=200, error=None, now_ms=now)


def test_a_clean_stop_forgets_its_owner_so_the_next_generation_need_not_wait(ledger: Ledger) -> None:
    ledger.beat("w1", 0)
    ledger.claim("e1", "r", "slack", "w1", 0, LEASE, partition=0, generation=1)
    ledger.forget("w1")
    assert ledger.claim("e1", "r", "slack", "w2", 1, LEASE, partition=0, generation=2).state is ClaimState.STALE


def test_a_clean_stops_claims_are_taken_even_by_a_group_that_started_again_at_its_generation(ledger: Ledger) -> None:
    """Kafka deletes a group that committed nothing when it empties; the next worker joins at generation 1 again."""
    ledger.beat("w1", 0)
    ledger.beat("w3", 0)
    ledger.claim("e1", "r", "slack", "w1", 0, LEASE, partition=0, generation=1)
    ledger.claim("e2", "r", "slack", "w3", 0, LEASE, partition=0, generation=1)
    ledger.forget("w1")
    taken = ledger.claim("e1", "r", "slack", "w2", 1, LEASE, partition=0, generation=1)
    assert (taken.state, taken.why) == (ClaimState.STALE, "generation")
    # another owner's claim is not touched by w1's stop (w3 lives on: busy)
    assert ledger.claim("e2", "r", "slack", "w2", 1, LEASE, partition=0, generation=1).state is ClaimState.BUSY


@pytest.mark.parametrize(
    ("partition", "generation", "why"),
    [
        (3, 7, "the same generation"),
        (3, 6, "an older generation"),
        (4, 8, "another partition"),
        (3, None, "no generation known"),
    ],
)
def test_no_takeover_before_the_lease_without_a_newer_generation_of_the_partition(
    ledger: Ledger, partition: int, generation: int | None, why: str
) -> None:
    ledger.claim("e1", "r", "slack", "dead", 0, LEASE, partition=3, generation=7)  # never beat: dead
    now = OWNER_TIMEOUT * 3
    assert ledger.claim("e1", "r", "slack", "w2", now, LEASE, partition=partition, generation=generation).state is (
        ClaimState.BUSY
    ), why
    late = ledger.claim("e1", "r", "slack", "w2", LEASE, LEASE, partition=partition, generation=generation)
    assert (late.state, late.why) == (ClaimState.STALE, "lease")


def test_no_takeover_from_a_live_owner_even_in_a_newer_generation(ledger: Ledger) -> None:
    """Every rebalance starts a generation; the old owner may be alive and mid-request."""
    ledger.beat("w1", 0)
    ledger.claim("e1", "r", "slack", "w1", 0, LEASE, partition=3, generation=7)
    ledger.beat("w1", 5_000)
    assert ledger.claim("e1", "r", "slack", "w2", 6_000, LEASE, partition=3, generation=8).state is ClaimState.BUSY
    # it keeps beating: still busy; once it falls silent for the owner timeout, taken over
    ledger.beat("w1", 14_000)
    assert ledger.claim("e1", "r", "slack", "w2", 20_000, LEASE, partition=3, generation=8).state is ClaimState.BUSY
    assert ledger.claim("e1", "r", "slack", "w2", 24_000, LEASE, partition=3, generation=8).state is ClaimState.STALE


def test_a_claim_waited_on_is_logged_once(ledger: Ledger, caplog: pytest.LogCaptureFixture) -> None:
    ledger.beat("w1", 0)
    ledger.claim("e1", "r", "slack", "w1", 0, LEASE, partition=3, generation=7)
    ledger.claim("e2", "r", "slack", "w1", 0, LEASE, partition=3, generation=7)
    with caplog.at_level(logging.INFO, logger="agents.sinks.ledger"):
        for now in (1_000, 2_000, 3_000):
            assert ledger.claim("e1", "r", "slack", "w2", now, LEASE, partition=3, generation=7).state is (
                ClaimState.BUSY
            )
        ledger.claim("e2", "r", "slack", "w2", 3_000, LEASE, partition=3, generation=7)
    waits = [r for r in caplog.records if "waits for the claim" in r.getMessage()]
    assert [r.levelno for r in waits] == [logging.INFO, logging.INFO]  # one per claim, not one per poll
    first = waits[0].getMessage()
    assert "e1 to r" in first and "of w1" in first and "partition 3, generation 7" in first and "in 59 s" in first


def test_create_adds_the_claim_columns_to_an_older_table(ledger: Ledger) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE delivery_ledger"))
        conn.execute(
            sa.text(
                "CREATE TABLE delivery_ledger (effect_id VARCHAR(64), receiver VARCHAR(200), channel VARCHAR(32), "
                "status VARCHAR(16), owner VARCHAR(64), claims INTEGER, attempts INTEGER, ambiguous INTEGER, "
                "http_status INTEGER, error TEXT, claimed_at BIGINT, completed_at BIGINT, "
                "PRIMARY KEY (effect_id, receiver))"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO delivery_ledger VALUES ('old', 'r', 'slack', 'delivered', 'w0', 1, 1, 0, 200, NULL, 0, 1)"
            )
        )
    ledger.create()
    assert ledger.claim("old", "r", "slack", "w1", 5, LEASE, partition=1, generation=2).state is ClaimState.DONE
    assert ledger.claim("new", "r", "slack", "w1", 5, LEASE, partition=1, generation=2).state is ClaimState.NEW
    assert ledger.get("new", "r").claim_generation == 2
    assert ledger.spill_many([Spill("spilled", "r", "slack", 0, 2, 7, "rec")], "w1", 5) == [None]
    assert ledger.get("spilled", "r").spill_offset == 7
    ledger.create()  # again: nothing to add


# -- the spill ----------------------------------------------------------------------


def spill(effect_id: str, offset: int, partition: int = 0, receiver: str = "r") -> Spill:
    return Spill(effect_id, receiver, "slack", partition, 1, offset, f"record of {effect_id}")


def test_a_spilled_effect_is_one_row_claimed_once_and_never_spilled_again_once_done(ledger: Ledger) -> None:
    assert ledger.spill_many([spill("e1", 10), spill("e2", 11), spill("e1", 10)], "w1", 100) == [None] * 3
    rows = {r.effect_id: r for r in ledger.rows()}
    assert set(rows) == {"e1", "e2"} and {r.status for r in rows.values()} == {SPILLED}
    assert rows["e1"].spill_record == "record of e1" and rows["e1"].owner == "w1"
    assert ledger.spill_many([spill("e1", 10)], "w2", 200) == [None]  # read again: already in the spill
    ledger.beat("w2", 200)
    busy = ledger.claim("e1", "r", "slack", "w2", 200, LEASE)  # w1's row, and w1 never beat: dead
    assert busy.state is ClaimState.NEW and ledger.get("e1", "r").owner == "w2"
    ledger.beat("w1", 200)
    assert ledger.claim("e2", "r", "slack", "w2", 200, LEASE).state is ClaimState.BUSY  # w1 is alive: its row
    assert ledger.claim("e2", "r", "slack", "w1", 200, LEASE).state is ClaimState.NEW
    ledger.complete("e2", "r", "w1", status="delivered", attempts=1, http_status=200, error=None, now_ms=300)
    assert ledger.get("e2", "r").spill_record is None  # not kept once final
    done = ledger.spill_many([spill("e2", 11)], "w1", 400)
    assert done[0] is not None and done[0].state is ClaimState.DONE and done[0].status == "delivered"


def test_a_batch_claim_takes_our_spilled_rows_back_in_its_insert_and_others_by_their_rules(ledger: Ledger) -> None:
    """A storm's spill comes back through claim_many: our own spilled rows become claims in the claim's one
    INSERT (not a SELECT and an UPDATE each); a live owner's stay its own, a dead owner's are taken over."""
    ledger.beat("w1", 0)
    ledger.beat("w2", 0)
    ledger.spill_many([spill(f"m{i}", i) for i in range(6)], "w1", 0)
    ledger.spill_many([spill("live", 10)], "w2", 0)
    ledger.spill_many([spill("gone", 11)], "w3", 0)  # w3 never beat: dead
    ours = [ClaimRequest(f"m{i}", "r", "slack", partition=2, generation=7) for i in range(6)]
    statements: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:  # noqa: ANN001 - SQLAlchemy's event signature
        statements.append(statement)

    sa.event.listen(ledger.engine, "before_cursor_execute", seen)
    try:
        claims = ledger.claim_many(ours, "w1", 50, LEASE)
    finally:
        sa.event.remove(ledger.engine, "before_cursor_execute", seen)
    assert [(c.state, c.status, c.attempts, c.ambiguous, c.claims) for c in claims] == [
        (ClaimState.NEW, "claimed", 0, 0, 1)
    ] * 6
    assert [s.split()[0].upper() for s in statements] == ["INSERT"]  # one statement for the six
    row = ledger.get("m0", "r")
    taken = (row.status, row.owner, row.claimed_at, row.claim_partition, row.claim_generation, row.spill_offset)
    assert taken == ("claimed", "w1", 50, 2, 7, 0)
    others = [ClaimRequest(e, "r", "slack") for e in ("live", "gone", "new")]
    assert [c.state for c in ledger.claim_many(others, "w1", 60, LEASE)] == [
        ClaimState.BUSY,  # w2 is alive: its row
        ClaimState.NEW,  # w3's, taken over
        ClaimState.NEW,
    ]
    assert {r.effect_id: (r.owner, r.status) for r in ledger.rows() if not r.effect_id.startswith("m")} == {
        "live": ("w2", SPILLED),
        "gone": ("w1", "claimed"),
        "new": ("w1", "claimed"),
    }
    assert ledger.release("m0", "r", "w1") and ledger.get("m0", "r").status == SPILLED  # given back: spilled again
    assert ledger.claim_many(ours[:1], "w1", 70, LEASE)[0].state is ClaimState.NEW
    ledger.complete_many([Completion("m1", "r", "delivered", 1, 200, None)], "w1", 80)
    assert [c.state for c in ledger.claim_many(ours[1:2], "w1", 90, LEASE)] == [ClaimState.DONE]


def test_a_spilled_claim_given_back_returns_to_the_spill_and_a_plain_one_is_deleted(ledger: Ledger) -> None:
    ledger.spill_many([spill("e1", 1)], "w1", 0)
    assert ledger.claim("e1", "r", "slack", "w1", 10, LEASE).state is ClaimState.NEW
    assert ledger.claim("e2", "r", "slack", "w1", 10, LEASE).state is ClaimState.NEW
    assert ledger.release("e1", "r", "w1") and ledger.release("e2", "r", "w1")
    assert [(r.effect_id, r.status) for r in ledger.rows()] == [("e1", SPILLED)]


def test_a_claimed_row_read_again_while_spilling_gets_the_record(ledger: Ledger) -> None:
    """Its offset is committed from then on: if its owner dies, the spill's takeover must find it."""
    assert ledger.claim("e1", "r", "slack", "w1", 0, LEASE, partition=0, generation=1).state is ClaimState.NEW
    assert ledger.spill_many([spill("e1", 5)], "w2", 10) == [None]
    row = ledger.get("e1", "r")
    assert (row.status, row.owner, row.spill_offset, row.spill_record) == ("claimed", "w1", 5, "record of e1")
    ledger.beat("w2", 10)
    waits = ledger.spilled("r", "w2", 10, 10)  # w1 is dead, but w2 has not read up to offset 5 nor seen it committed
    assert waits.rows == [] and waits.held
    scan = ledger.spilled("r", "w2", 10, 10, ready={0: 6})  # now its claim is offered; the claim's takeover decides
    assert [r.effect_id for r in scan.rows] == ["e1"]
    assert ledger.claim("e1", "r", "slack", "w2", 10, LEASE, partition=0, generation=2).state is ClaimState.STALE


def test_the_spill_is_taken_back_in_offset_order_per_partition_behind_a_live_owners_rows(ledger: Ledger) -> None:
    ledger.beat("w1", 0)
    ledger.beat("w2", 0)
    ledger.spill_many([spill("a3", 3), spill("b1", 1, partition=1)], "w2", 0)
    ledger.spill_many([spill("a1", 1), spill("a5", 5), spill("b0", 0, partition=1)], "w1", 0)
    mine = ledger.spilled("r", "w2", 0, 10)
    # Partition 0: w1 (alive) holds a1, before w2's a3: wait. Partition 1: w2's b1 is after w1's b0 as well.
    assert mine.rows == [] and mine.held and mine.waiting == 5
    scan = ledger.spilled("r", "w1", 0, 10)
    assert [r.effect_id for r in scan.rows] == ["b0", "a1"] and scan.held  # a5 waits behind w2's a3
    assert ledger.spilled("r", "w1", 0, 10, skip=frozenset({"b0"})).rows[0].effect_id == "a1"
    assert [r.offset for r in ledger.spilled("r", "w1", 0, 1).rows] == [0]  # limit
    # w1 dies (no beat for owner_timeout_ms): w2 adopts its rows, in order with its own, as far as it has read
    # (or seen committed) each partition: a5 waits until partition 0 is read past offset 5.
    later = 60_000
    ledger.beat("w2", later)
    scan = ledger.spilled("r", "w2", later, 10, ready={0: 4, 1: 2})
    assert [r.effect_id for r in scan.rows] == ["b0", "a1", "b1", "a3"] and scan.held
    scan = ledger.spilled("r", "w2", later, 10, ready={0: 6, 1: 2})
    assert [r.effect_id for r in scan.rows] == ["b0", "a1", "b1", "a3", "a5"] and not scan.held
    assert {r.owner for r in ledger.rows()} == {"w2"}


def test_racing_adopters_of_a_dead_owners_spill_take_each_row_once(ledger: Ledger) -> None:
    ledger.spill_many([spill(f"e{i}", i, partition=i % 2) for i in range(40)], "dead", 0)
    for w in ("w1", "w2", "w3"):
        ledger.beat(w, 60_000)
    results: dict[str, list[str]] = {}

    def adopt(owner: str) -> None:
        results[owner] = [r.effect_id for r in ledger.spilled("r", owner, 60_000, 100, ready={0: 40, 1: 40}).rows]

    threads = [threading.Thread(target=adopt, args=(w,)) for w in ("w1", "w2", "w3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken = [e for ids in results.values() for e in ids]
    assert len(taken) == len(set(taken)) == 40  # each row once, and none left behind
    owners = {r.effect_id: r.owner for r in ledger.rows()}
    for owner, ids in results.items():
        assert all(owners[e] == owner for e in ids)
    # Per partition, one adopter's rows are a prefix-free run: no one took a row behind another's.
    for part in (0, 1):
        seq = [owners[f"e{i}"] for i in range(40) if i % 2 == part]
        assert seq == sorted(seq, key=seq.index), f"partition {part} split between adopters: {seq}"
