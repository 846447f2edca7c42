"""The delivery ledger: one SQL row per (effect id, receiver), claimed before sending.

Kafka redelivers after a crash (offsets are committed after the fact), so a sink
must know what it already did. A row is inserted (claimed) before the first
request and completed after the last one; a redelivered effect whose row is
complete is not sent again. A claim that was never completed means a process died
mid-delivery: it is taken over as *stale*, and for sinks without idempotency that is
the ambiguous path (the request may or may not have landed).

When a claim is taken over: after its lease (longer than any delivery can take), or
at once when its owner is known dead. Each claim records the outbox partition and the
consumer-group generation it was made in, and every live owner beats a row in
``ledger_owners``. A claimer that reads the same partition in a *newer* generation (the
partition was reassigned since) takes over a claim whose owner has stopped beating
(killed, or shut down: a clean stop's :meth:`Ledger.forget` removes the row and marks
its claims older than any generation).
A newer generation alone is not enough: every rebalance starts one, and the old owner
may be alive and mid-request, so taking over then would send twice. A claim waited on is logged once (INFO).

The spill: a destination whose in-memory queue is full (a slow receiver under a storm)
gets its further effects written here as ``spilled`` rows instead of being dead-lettered
(:meth:`Ledger.spill_many`): the row carries the outbox record (``spill_record``), its
partition and offset, and is owned by the worker that spilled it. Once it is committed
the record's offset may be committed too; the owner's destination takes its spilled rows
back in offset order when its queue drains (:meth:`Ledger.spilled`), and the ordinary
claim turns ``spilled`` into ``claimed`` right before the send. Rows of a dead owner are
adopted by whichever worker scans that destination next (one conditional UPDATE per dead
owner: one wins), as far as that worker has read the partition (its own spills of what it
read committed) or seen it committed: what the dead owner read but never settled is read
again and must fall in first. Order: a session's effects are on one outbox partition, so
within a partition and destination the spill is taken back in offset order, and a worker
takes no spilled row while an earlier one of that partition is held by another owner. The
offset (not the time of spilling) orders them so that records read again after a crash,
and spilled then, fall back into their place. Across partitions offsets are compared as
they are (partitions fill at similar rates; each partition's order is what matters).

Portable SQL (SQLite and PostgreSQL alike): INSERT .. ON CONFLICT DO NOTHING and
conditional UPDATEs carrying the expected owner, so two workers racing on one
effect never both win.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from streams.db import dialect_insert
from streams.errors import OpsloopError

log = logging.getLogger(__name__)

CLAIMED = "claimed"
SPILLED = "spilled"  # waiting in the spill (see the module docstring): nothing sent yet
# The generation a clean stop gives the claims it leaves unfinished: older than any, so the
# partition's next owner takes them at once even in a group that started again at generation 1
# (Kafka deletes a group that committed nothing when its last member leaves).
RELEASED_GENERATION = -1
FINAL_STATUSES = ("delivered", "dead", "ambiguous")


class Base(DeclarativeBase):
    pass


class LedgerRow(Base):
    __tablename__ = "delivery_ledger"

    effect_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    receiver: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(sa.String(32))
    status: Mapped[str] = mapped_column(sa.String(16), index=True)  # spilled | claimed | delivered | dead | ambiguous
    owner: Mapped[str] = mapped_column(sa.String(64))
    claims: Mapped[int] = mapped_column(sa.Integer, default=1)  # >1: taken over after a crash
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    ambiguous: Mapped[int] = mapped_column(sa.Integer, default=0)  # timeouts with unknown outcome
    http_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    claimed_at: Mapped[int] = mapped_column(sa.BigInteger)  # epoch ms
    completed_at: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    # Where the claimer read the effect: its outbox partition and consumer-group generation (None: unknown).
    claim_partition: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    claim_generation: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    # The redrive (`opsloop dlq redrive`, its source position) that last re-opened a dead row: each re-opens once.
    redrive: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)
    # A spilled effect (see the module docstring): its outbox offset and partition, the record (None: never spilled).
    spill_offset: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    spill_partition: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    spill_record: Mapped[str | None] = mapped_column(sa.Text, nullable=True)


class OwnerRow(Base):
    """A live ledger owner (one per worker process), beating while it runs; gone or stale: dead."""

    __tablename__ = "ledger_owners"

    owner: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    seen_at: Mapped[int] = mapped_column(sa.BigInteger)  # epoch ms


# Columns added after the table first shipped: create() adds them to an existing table.
ADDED_COLUMNS = {
    "claim_partition": "INTEGER",
    "claim_generation": "INTEGER",
    "redrive": "VARCHAR(300)",
    "spill_offset": "BIGINT",
    "spill_partition": "INTEGER",
    "spill_record": "TEXT",
}
# Indexes added after the table first shipped (create_all makes none on an existing table); portable DDL.
ADDED_INDEXES = {"ix_delivery_ledger_spill": "(receiver, status, spill_offset)"}


class ClaimState(enum.Enum):
    NEW = "new"  # first claim: send
    DONE = "done"  # completed before: do not send again
    BUSY = "busy"  # another live owner holds it (within its lease): wait
    STALE = "stale"  # a dead owner's claim taken over: outcome of its send unknown


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    status: str  # the row's status after the claim
    attempts: int = 0
    ambiguous: int = 0
    claims: int = 1
    why: str = ""  # a takeover's reason: "lease" or "generation"
    at: float = 0.0  # loop time the claimer got it (claims made ahead of their send)


@dataclass(frozen=True)
class ClaimRequest:
    """One claim of a batch (:meth:`Ledger.claim_many`): the arguments of :meth:`Ledger.claim` that vary."""

    effect_id: str
    receiver: str
    channel: str
    partition: int | None = None
    generation: int | None = None


@dataclass(frozen=True)
class Completion:
    """One completion of a batch (:meth:`Ledger.complete_many`)."""

    effect_id: str
    receiver: str
    status: str
    attempts: int
    http_status: int | None
    error: str | None


@dataclass(frozen=True)
class Spill:
    """One effect to spill (:meth:`Ledger.spill_many`): its claim's arguments and the outbox record."""

    effect_id: str
    receiver: str
    channel: str
    partition: int
    generation: int | None
    offset: int
    record: str


@dataclass(frozen=True)
class SpilledRow:
    """A spilled effect a destination may take back (:meth:`Ledger.spilled`)."""

    effect_id: str
    offset: int
    partition: int | None
    record: str


@dataclass(frozen=True)
class SpillScan:
    """What :meth:`Ledger.spilled` found for one destination."""

    rows: list[SpilledRow]  # to take back now, in offset order
    held: bool  # another owner has unfinished spilled rows for the destination (this one may wait on them)
    waiting: int  # rows in ``spilled`` for the destination (all owners)


# Rows per multi-row INSERT: 11 (a claim) or 14 (a spill) bind parameters each, well inside SQLite's 32,766.
CLAIM_BATCH = 500


class LedgerConflictError(OpsloopError, RuntimeError):
    """A completion found the row owned by someone else (its claim was taken over)."""


class Ledger:
    """Claim / complete on a SQLAlchemy engine. Blocking calls: run them off the event loop."""

    def __init__(self, engine: sa.Engine, *, owner_timeout_ms: int = 10_000) -> None:
        self.engine = engine
        self.owner_timeout_ms = owner_timeout_ms  # an owner not seen for this long is dead
        self._table = cast(sa.Table, LedgerRow.__table__)  # a declarative class's table; typed as FromClause
        self._owners = cast(sa.Table, OwnerRow.__table__)
        self._waited: dict[tuple[str, str, str, int], None] = {}  # claims logged as waited on (bounded)

    def create(self) -> Ledger:
        Base.metadata.create_all(self.engine)
        have = {c["name"] for c in sa.inspect(self.engine).get_columns(self._table.name)}
        with self.engine.begin() as conn:
            for name, sql_type in ADDED_COLUMNS.items():
                if name not in have:
                    conn.execute(sa.text(f"ALTER TABLE {self._table.name} ADD COLUMN {name} {sql_type}"))
            for index, columns in ADDED_INDEXES.items():
                conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {index} ON {self._table.name} {columns}"))
        return self

    # -- owners ------------------------------------------------------------------

    def beat(self, owner: str, now_ms: int) -> None:
        """Say ``owner`` is alive (a worker calls this every few seconds while it runs)."""
        o = self._owners
        with self.engine.begin() as conn:
            if conn.execute(sa.update(o).where(o.c.owner == owner).values(seen_at=now_ms)).rowcount == 0:
                conn.execute(self._insert(o, ["owner"]).values(owner=owner, seen_at=now_ms))

    def forget(self, owner: str) -> None:
        """A clean stop: ``owner``'s claims left unfinished can be taken over at once by the partition's next owner.

        The owner sends nothing more (its dispatcher has closed), so its claims are marked
        RELEASED_GENERATION, older than whatever generation reads the partition next.
        """
        t = self._table
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(t)
                .where(t.c.owner == owner, t.c.status == CLAIMED, t.c.claim_generation.is_not(None))
                .values(claim_generation=RELEASED_GENERATION)
            )
            conn.execute(sa.delete(self._owners).where(self._owners.c.owner == owner))

    def _alive(self, conn: sa.Connection, owner: str, now_ms: int) -> bool:
        seen = conn.execute(sa.select(self._owners.c.seen_at).where(self._owners.c.owner == owner)).scalar()
        return seen is not None and seen + self.owner_timeout_ms > now_ms

    def _waiting(self, effect_id: str, receiver: str, row: sa.Row[Any], now_ms: int, lease_ms: int) -> None:
        key = (effect_id, receiver, row.owner, row.claimed_at)
        if key in self._waited:
            return
        if len(self._waited) >= 10_000:
            self._waited.clear()
        self._waited[key] = None
        log.info(
            "delivery of %s to %s waits for the claim of %s (outbox partition %s, generation %s, %.0f s ago): "
            "taken over when its owner stops beating and the partition has a newer owner, or in %.0f s at most",
            effect_id,
            receiver,
            row.owner,
            row.claim_partition,
            row.claim_generation,
            (now_ms - row.claimed_at) / 1000,
            max(0, row.claimed_at + lease_ms - now_ms) / 1000,
        )

    def _insert(self, table: sa.Table | None = None, keys: list[str] | None = None) -> sa.Insert:
        table, keys = (self._table, ["effect_id", "receiver"]) if table is None else (table, keys or [])
        return dialect_insert(self.engine, table).on_conflict_do_nothing(index_elements=keys)

    @functools.cached_property
    def _claim_insert(self) -> sa.Insert:
        """The claim's INSERT, which also takes back our own spilled row (nothing sent yet) in the same statement,
        as :meth:`_take` would for that row read as ``spilled`` and ours. RETURNING gives either kind of row with
        the counts of its :class:`Claim` (a new row's are 0, 0 and 1). Under a storm a third of the notifications
        come back from the spill; taken row by row (a SELECT and an UPDATE each, after the INSERT found the row)
        they cost 0.95 ms of the claim's CPU each against 0.12 for a new row (``tests/sinks/bench_ledger.py``)."""
        t = self._table
        stmt = dialect_insert(self.engine, t)
        taken = stmt.on_conflict_do_update(
            index_elements=[t.c.effect_id, t.c.receiver],
            set_={
                "status": CLAIMED,
                "claimed_at": stmt.excluded.claimed_at,
                "claim_partition": stmt.excluded.claim_partition,
                "claim_generation": stmt.excluded.claim_generation,
            },
            where=(t.c.status == SPILLED) & (t.c.owner == stmt.excluded.owner),
        )
        return taken.returning(t.c.effect_id, t.c.receiver, t.c.attempts, t.c.ambiguous, t.c.claims)

    def claim(
        self,
        effect_id: str,
        receiver: str,
        channel: str,
        owner: str,
        now_ms: int,
        lease_ms: int,
        *,
        partition: int | None = None,
        generation: int | None = None,
    ) -> Claim:
        """Claim the delivery of one effect to one receiver (see :class:`ClaimState`).

        ``partition`` and ``generation``: the outbox partition the claimer read the effect
        from and its consumer group's generation (see the module docstring).
        """
        with self.engine.begin() as conn:
            inserted = conn.execute(
                self._insert().values(
                    self._claim_row(ClaimRequest(effect_id, receiver, channel, partition, generation), owner, now_ms)
                )
            ).rowcount
            if inserted == 1:
                return Claim(ClaimState.NEW, CLAIMED)
            return self._claim_existing(conn, effect_id, receiver, owner, now_ms, lease_ms, partition, generation)

    def claim_many(self, requests: list[ClaimRequest], owner: str, now_ms: int, lease_ms: int) -> list[Claim]:
        """:meth:`claim` for a batch, in one transaction: one INSERT .. ON CONFLICT .. RETURNING executed for all
        the rows (SQLAlchemy 2 sends them as multi-row INSERTs from one cached compiled statement: building a
        ``.values([...])`` statement per batch was compiled anew each time, ~40 % of the claims' CPU), which also
        takes back our own spilled rows (:meth:`_claim_insert`), and the row-by-row path of :meth:`claim` only
        for the other rows already in the table (a redelivery, a takeover). Under a storm this is one commit per
        batch instead of one per effect; the rows are committed before any of their sends starts, exactly as
        one claim's is."""
        claims: list[Claim | None] = [None] * len(requests)
        with self.engine.begin() as conn:
            for start in range(0, len(requests), CLAIM_BATCH):
                chunk = requests[start : start + CLAIM_BATCH]
                first: dict[tuple[str, str], int] = {}
                for i, req in enumerate(chunk, start):
                    if first.setdefault((req.effect_id, req.receiver), i) != i:
                        # The same delivery twice in one batch: the first is ours and about to send, so the
                        # other waits (BUSY) and then finds it done, rather than resuming "our own claim".
                        claims[i] = Claim(ClaimState.BUSY, CLAIMED)
                rows = [self._claim_row(requests[i], owner, now_ms) for i in first.values()]
                for row in conn.execute(self._claim_insert, rows):
                    claims[first[(row.effect_id, row.receiver)]] = Claim(
                        ClaimState.NEW, CLAIMED, row.attempts, row.ambiguous, row.claims
                    )
            for i, req in enumerate(requests):
                if claims[i] is None:
                    claims[i] = self._claim_existing(
                        conn, req.effect_id, req.receiver, owner, now_ms, lease_ms, req.partition, req.generation
                    )
        return [c if c is not None else Claim(ClaimState.BUSY, CLAIMED) for c in claims]

    @staticmethod
    def _claim_row(req: ClaimRequest, owner: str, now_ms: int) -> dict[str, Any]:
        return {
            "effect_id": req.effect_id,
            "receiver": req.receiver,
            "channel": req.channel,
            "status": CLAIMED,
            "owner": owner,
            "claims": 1,
            "attempts": 0,
            "ambiguous": 0,
            "claimed_at": now_ms,
            "claim_partition": req.partition,
            "claim_generation": req.generation,
        }

    def _claim_existing(
        self,
        conn: sa.Connection,
        effect_id: str,
        receiver: str,
        owner: str,
        now_ms: int,
        lease_ms: int,
        partition: int | None,
        generation: int | None,
    ) -> Claim:
        """The row is there already: done, ours, busy, or taken over (see :class:`ClaimState`)."""
        t = self._table
        row = conn.execute(sa.select(t).where(t.c.effect_id == effect_id, t.c.receiver == receiver)).one()
        claim = Claim(ClaimState.DONE, row.status, row.attempts, row.ambiguous, row.claims)
        if row.status == SPILLED:  # nothing sent yet: ours (or a dead owner's) to claim now; a live owner's: wait
            if row.owner == owner or not self._alive(conn, row.owner, now_ms):
                if self._take(conn, row, owner, now_ms, partition, generation, claims=row.claims):
                    return Claim(ClaimState.NEW, CLAIMED, row.attempts, row.ambiguous, row.claims)
            return Claim(ClaimState.BUSY, SPILLED, row.attempts, row.ambiguous, row.claims)
        if row.status != CLAIMED:
            return claim
        if row.owner == owner:  # our own earlier claim (e.g. redelivered within this process)
            return Claim(ClaimState.NEW, CLAIMED, row.attempts, row.ambiguous, row.claims)
        if row.claimed_at + lease_ms <= now_ms:
            why = "lease"
        elif (
            partition is not None
            and generation is not None
            and row.claim_partition == partition
            and row.claim_generation is not None
            and generation > row.claim_generation
            and not self._alive(conn, row.owner, now_ms)
        ):
            why = "generation"
        else:
            self._waiting(effect_id, receiver, row, now_ms, lease_ms)
            return Claim(ClaimState.BUSY, CLAIMED, row.attempts, row.ambiguous, row.claims)
        if not self._take(conn, row, owner, now_ms, partition, generation, claims=row.claims + 1):  # someone was first
            return Claim(ClaimState.BUSY, CLAIMED, row.attempts, row.ambiguous, row.claims)
        return Claim(ClaimState.STALE, CLAIMED, row.attempts, row.ambiguous, row.claims + 1, why)

    def _take(
        self,
        conn: sa.Connection,
        row: Any,
        owner: str,
        now_ms: int,
        partition: int | None,
        generation: int | None,
        *,
        claims: int,
    ) -> bool:
        """Make ``row`` (as read) our claim, if nobody changed it since; False: someone else was first."""
        t = self._table
        return (
            conn.execute(
                sa.update(t)
                .where(
                    t.c.effect_id == row.effect_id,
                    t.c.receiver == row.receiver,
                    t.c.status == row.status,
                    t.c.owner == row.owner,
                    t.c.claimed_at == row.claimed_at,
                )
                .values(
                    status=CLAIMED,
                    owner=owner,
                    claimed_at=now_ms,
                    claims=claims,
                    claim_partition=partition,
                    claim_generation=generation,
                )
            ).rowcount
            == 1
        )

    def reopen(
        self,
        effect_id: str,
        receiver: str,
        owner: str,
        now_ms: int,
        redrive: str,
        *,
        partition: int | None = None,
        generation: int | None = None,
    ) -> bool:
        """Claim a ``dead`` row again for a redriven effect; once per ``redrive`` (False: not dead, or done before)."""
        t = self._table
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    sa.update(t)
                    .where(
                        t.c.effect_id == effect_id,
                        t.c.receiver == receiver,
                        t.c.status == "dead",
                        sa.or_(t.c.redrive.is_(None), t.c.redrive != redrive),
                    )
                    .values(
                        status=CLAIMED,
                        owner=owner,
                        claimed_at=now_ms,
                        completed_at=None,
                        claims=t.c.claims + 1,
                        redrive=redrive,
                        claim_partition=partition,
                        claim_generation=generation,
                    )
                ).rowcount
                == 1
            )

    def record_ambiguous(self, effect_id: str, receiver: str, owner: str) -> None:
        """Count a timeout whose outcome is unknown (kept on the row for audit)."""
        t = self._table
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(t)
                .where(t.c.effect_id == effect_id, t.c.receiver == receiver, t.c.owner == owner)
                .values(ambiguous=t.c.ambiguous + 1)
            )

    def complete(
        self,
        effect_id: str,
        receiver: str,
        owner: str,
        *,
        status: str,
        attempts: int,
        http_status: int | None,
        error: str | None,
        now_ms: int,
    ) -> None:
        """Mark the claim final; raises LedgerConflictError if our claim was taken over meanwhile."""
        done = self.complete_many(
            [Completion(effect_id, receiver, status, attempts, http_status, error)], owner, now_ms
        )
        if not done[0]:
            raise LedgerConflictError(f"ledger row {effect_id}/{receiver} is no longer claimed by {owner}")

    def complete_many(self, completions: list[Completion], owner: str, now_ms: int) -> list[bool]:
        """Mark claims final in one transaction; each False: that row is no longer ours (taken over)."""
        for c in completions:
            if c.status not in FINAL_STATUSES:
                raise ValueError(f"not a final ledger status: {c.status!r}")
        t = self._table
        stmt = (
            sa.update(t)
            .where(
                t.c.effect_id == sa.bindparam("b_effect_id"),
                t.c.receiver == sa.bindparam("b_receiver"),
                t.c.owner == owner,
                t.c.status == CLAIMED,
            )
            .values(
                status=sa.bindparam("b_status"),
                attempts=t.c.attempts + sa.bindparam("b_attempts"),
                http_status=sa.bindparam("b_http_status"),
                error=sa.bindparam("b_error"),
                completed_at=now_ms,
                spill_record=None,  # a spilled effect's record is needed until it is final, not after
            )
        )
        params = [
            {
                "b_effect_id": c.effect_id,
                "b_receiver": c.receiver,
                "b_status": c.status,
                "b_attempts": c.attempts,
                "b_http_status": c.http_status,
                "b_error": c.error,
            }
            for c in completions
        ]
        with self.engine.begin() as conn:
            if len(params) == 1:
                return [conn.execute(stmt, params[0]).rowcount == 1]
            # One executemany; its rowcount is the sum. All ours (the usual case): done. Otherwise the rows this
            # statement completed are those now final under our owner with this completed_at; the rest were taken.
            if conn.execute(stmt, params).rowcount == len(params):
                return [True] * len(params)
            keys = [(c.effect_id, c.receiver) for c in completions]
            done = {
                (row.effect_id, row.receiver)
                for row in conn.execute(
                    sa.select(t.c.effect_id, t.c.receiver).where(
                        sa.tuple_(t.c.effect_id, t.c.receiver).in_(keys),
                        t.c.owner == owner,
                        t.c.status != CLAIMED,
                        t.c.completed_at == now_ms,
                    )
                )
            }
            return [key in done for key in keys]

    def renew(self, effect_id: str, receiver: str, owner: str, now_ms: int) -> bool:
        """Restart the lease of our unfinished claim (one claimed ahead of its send); False: no longer ours."""
        t = self._table
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    sa.update(t)
                    .where(
                        t.c.effect_id == effect_id, t.c.receiver == receiver, t.c.owner == owner, t.c.status == CLAIMED
                    )
                    .values(claimed_at=now_ms)
                ).rowcount
                == 1
            )

    def release(self, effect_id: str, receiver: str, owner: str) -> bool:
        """Give back an unfinished claim of ours whose request cannot have landed (shutdown): deleted, or back
        to ``spilled`` if it came from the spill (its outbox offset may be committed: the row is all there is)."""
        t = self._table
        mine = (t.c.effect_id == effect_id, t.c.receiver == receiver, t.c.owner == owner, t.c.status == CLAIMED)
        with self.engine.begin() as conn:
            deleted = conn.execute(sa.delete(t).where(*mine, t.c.spill_offset.is_(None))).rowcount
            unspilled = conn.execute(sa.update(t).where(*mine, t.c.spill_offset.is_not(None)).values(status=SPILLED))
            return deleted + unspilled.rowcount == 1

    # -- the spill (see the module docstring) ---------------------------------------

    def spill_many(self, spills: list[Spill], owner: str, now_ms: int) -> list[Claim | None]:
        """Write effects to the spill in one transaction; each None: spilled (durable: its offset may be
        committed), or the :class:`Claim` (DONE) of a row completed before (report it, send nothing).

        A row already there and unfinished (spilled, or claimed by someone: a redelivered record) keeps its
        owner; a claimed one without a spill record gets this one, so that if its owner dies the spill's
        takeover finds it (its offset is committed from now on)."""
        t = self._table
        out: list[Claim | None] = [None] * len(spills)
        with self.engine.begin() as conn:
            for start in range(0, len(spills), CLAIM_BATCH):
                chunk = spills[start : start + CLAIM_BATCH]
                first: dict[tuple[str, str], int] = {}
                for i, sp in enumerate(chunk, start):
                    first.setdefault((sp.effect_id, sp.receiver), i)
                rows = [self._spill_row(spills[i], owner, now_ms) for i in first.values()]
                inserted = {
                    (e, r) for e, r in conn.execute(self._insert().returning(t.c.effect_id, t.c.receiver), rows)
                }
                for key, i in first.items():
                    if key in inserted:
                        continue
                    sp = spills[i]
                    row = conn.execute(
                        sa.select(t).where(t.c.effect_id == sp.effect_id, t.c.receiver == sp.receiver)
                    ).one()
                    if row.status in FINAL_STATUSES:
                        out[i] = Claim(ClaimState.DONE, row.status, row.attempts, row.ambiguous, row.claims)
                    elif row.spill_offset is None:
                        conn.execute(
                            sa.update(t)
                            .where(
                                t.c.effect_id == sp.effect_id, t.c.receiver == sp.receiver, t.c.spill_offset.is_(None)
                            )
                            .values(spill_offset=sp.offset, spill_partition=sp.partition, spill_record=sp.record)
                        )
                for i, sp in enumerate(spills[start : start + CLAIM_BATCH], start):
                    j = first[(sp.effect_id, sp.receiver)]
                    out[i] = out[j]
        return out

    @staticmethod
    def _spill_row(sp: Spill, owner: str, now_ms: int) -> dict[str, Any]:
        row = Ledger._claim_row(
            ClaimRequest(sp.effect_id, sp.receiver, sp.channel, sp.partition, sp.generation), owner, now_ms
        )
        row.update(status=SPILLED, spill_offset=sp.offset, spill_partition=sp.partition, spill_record=sp.record)
        return row

    def spilled(
        self,
        receiver: str,
        owner: str,
        now_ms: int,
        limit: int,
        skip: frozenset[str] = frozenset(),
        ready: Mapping[int, int] | None = None,
    ) -> SpillScan:
        """Up to ``limit`` spilled rows of ``receiver`` that ``owner`` may take back now, in offset order: its own,
        and a dead owner's (adopted here: its spilled rows become ours; its claims are offered, and the claim's
        takeover decides). ``skip``: effects the caller took already. A row with an earlier one of its
        partition held by another owner is left for later (see the module docstring).

        ``ready``: per outbox partition, the offset below which the caller has read or seen committed every
        record. A dead owner's row at or past it waits: the records before it that the dead owner had not settled
        are read again from the outbox, and must spill (or be sent) first, in their place."""
        t = self._table
        spill = (t.c.receiver == receiver, t.c.spill_offset.is_not(None), t.c.status.in_((SPILLED, CLAIMED)))
        in_place = sa.or_(
            sa.false(),
            *(sa.and_(t.c.spill_partition == p, t.c.spill_offset < below) for p, below in (ready or {}).items()),
        )
        with self.engine.begin() as conn:
            others = conn.execute(sa.select(t.c.owner).where(*spill, t.c.owner != owner).distinct()).scalars().all()
            live = [o for o in others if self._alive(conn, o, now_ms)]
            dead = [o for o in others if o not in live]
            for gone in dead:  # one UPDATE per dead owner: racing adopters each get whole rows, once
                conn.execute(
                    sa.update(t)
                    .where(t.c.receiver == receiver, t.c.status == SPILLED, t.c.owner == gone, in_place)
                    .values(owner=owner)
                )
            takeable = (t.c.owner == owner) & (t.c.status == SPILLED)
            if dead:
                takeable = takeable | (t.c.owner.in_(dead) & (t.c.status == CLAIMED) & in_place)
            found = conn.execute(
                sa.select(t.c.effect_id, t.c.spill_offset, t.c.spill_partition, t.c.spill_record)
                .where(*spill, takeable)
                .order_by(t.c.spill_offset, t.c.spill_partition)
                .limit(limit + len(skip))
            ).all()
            first_held: dict[int | None, int] = {}
            if others and found:
                parts = {r.spill_partition for r in found}
                first_held = {
                    p: low
                    for p, low in conn.execute(
                        sa.select(t.c.spill_partition, sa.func.min(t.c.spill_offset))
                        .where(*spill, t.c.owner != owner, t.c.spill_partition.in_(parts))
                        .group_by(t.c.spill_partition)
                    )
                }
            rows = [
                SpilledRow(r.effect_id, r.spill_offset, r.spill_partition, r.spill_record or "")
                for r in found
                if r.effect_id not in skip
                and not (r.spill_partition in first_held and first_held[r.spill_partition] < r.spill_offset)
            ][:limit]
            held = bool(live) or (
                bool(dead)
                and conn.execute(sa.select(t.c.effect_id).where(*spill, t.c.owner.in_(dead)).limit(1)).first()
                is not None
            )
            waiting = conn.execute(
                sa.select(sa.func.count()).select_from(t).where(t.c.receiver == receiver, t.c.status == SPILLED)
            ).scalar_one()
        return SpillScan(rows, held, int(waiting))

    def spill_receivers(self) -> list[str]:
        """Receivers with unfinished spilled effects (any owner): their destinations should be taking them back."""
        t = self._table
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(t.c.receiver)
                    .where(t.c.status.in_((SPILLED, CLAIMED)), t.c.spill_offset.is_not(None))
                    .distinct()
                ).scalars()
            )

    def get(self, effect_id: str, receiver: str) -> LedgerRow | None:
        t = self._table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.effect_id == effect_id, t.c.receiver == receiver)).one_or_none()
        return None if row is None else LedgerRow(**row._mapping)

    def rows(self) -> list[LedgerRow]:
        t = self._table
        with self.engine.connect() as conn:
            return [LedgerRow(**r._mapping) for r in conn.execute(sa.select(t).order_by(t.c.claimed_at))]
