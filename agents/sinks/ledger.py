"""The delivery ledger: one SQL row per (effect id, receiver), claimed before sending.

Kafka redelivers after a crash (offsets are committed after the fact), so a sink
must know what it already did. A row is inserted (claimed) before the first
request and completed after the last one; a redelivered effect whose row is
complete is not sent again. A claim that was never completed means a process died
mid-delivery: after its lease it is taken over as *stale*, and for sinks without
idempotency that is the ambiguous path (the request may or may not have landed).

Portable SQL (SQLite and PostgreSQL alike): INSERT .. ON CONFLICT DO NOTHING and
conditional UPDATEs carrying the expected owner, so two workers racing on one
effect never both win.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from streams.errors import OpsloopError

CLAIMED = "claimed"
FINAL_STATUSES = ("delivered", "dead", "ambiguous")


class Base(DeclarativeBase):
    pass


class LedgerRow(Base):
    __tablename__ = "delivery_ledger"

    effect_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    receiver: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(sa.String(32))
    status: Mapped[str] = mapped_column(sa.String(16), index=True)  # claimed | delivered | dead | ambiguous
    owner: Mapped[str] = mapped_column(sa.String(64))
    claims: Mapped[int] = mapped_column(sa.Integer, default=1)  # >1: taken over after a crash
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    ambiguous: Mapped[int] = mapped_column(sa.Integer, default=0)  # timeouts with unknown outcome
    http_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    claimed_at: Mapped[int] = mapped_column(sa.BigInteger)  # epoch ms
    completed_at: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)


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


class LedgerConflictError(OpsloopError, RuntimeError):
    """A completion found the row owned by someone else (its claim was taken over)."""


class Ledger:
    """Claim / complete on a SQLAlchemy engine. Blocking calls: run them off the event loop."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._table = cast(sa.Table, LedgerRow.__table__)  # a declarative class's table; typed as FromClause

    def create(self) -> Ledger:
        Base.metadata.create_all(self.engine)
        return self

    def _insert(self) -> sa.Insert:
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            return postgresql.insert(self._table).on_conflict_do_nothing(index_elements=["effect_id", "receiver"])
        if dialect == "sqlite":
            return sqlite.insert(self._table).on_conflict_do_nothing(index_elements=["effect_id", "receiver"])
        raise NotImplementedError(f"delivery ledger supports sqlite and postgresql, not {dialect}")

    def claim(self, effect_id: str, receiver: str, channel: str, owner: str, now_ms: int, lease_ms: int) -> Claim:
        """Claim the delivery of one effect to one receiver (see :class:`ClaimState`)."""
        t = self._table
        with self.engine.begin() as conn:
            inserted = conn.execute(
                self._insert().values(
                    effect_id=effect_id,
                    receiver=receiver,
                    channel=channel,
                    status=CLAIMED,
                    owner=owner,
                    claims=1,
                    attempts=0,
                    ambiguous=0,
                    claimed_at=now_ms,
                )
            ).rowcount
            if inserted == 1:
                return Claim(ClaimState.NEW, CLAIMED)
            row = conn.execute(sa.select(t).where(t.c.effect_id == effect_id, t.c.receiver == receiver)).one()
            claim = Claim(ClaimState.DONE, row.status, row.attempts, row.ambiguous, row.claims)
            if row.status != CLAIMED:
                return claim
            if row.owner == owner:  # our own earlier claim (e.g. redelivered within this process)
                return Claim(ClaimState.NEW, CLAIMED, row.attempts, row.ambiguous, row.claims)
            if row.claimed_at + lease_ms > now_ms:
                return Claim(ClaimState.BUSY, CLAIMED, row.attempts, row.ambiguous, row.claims)
            taken = conn.execute(
                sa.update(t)
                .where(
                    t.c.effect_id == effect_id,
                    t.c.receiver == receiver,
                    t.c.status == CLAIMED,
                    t.c.owner == row.owner,
                    t.c.claimed_at == row.claimed_at,
                )
                .values(owner=owner, claimed_at=now_ms, claims=row.claims + 1)
            ).rowcount
            if taken != 1:  # someone else took it over first
                return Claim(ClaimState.BUSY, CLAIMED, row.attempts, row.ambiguous, row.claims)
            return Claim(ClaimState.STALE, CLAIMED, row.attempts, row.ambiguous, row.claims + 1)

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
        if status not in FINAL_STATUSES:
            raise ValueError(f"not a final ledger status: {status!r}")
        t = self._table
        with self.engine.begin() as conn:
            done = conn.execute(
                sa.update(t)
                .where(t.c.effect_id == effect_id, t.c.receiver == receiver, t.c.owner == owner, t.c.status == CLAIMED)
                .values(
                    status=status,
                    attempts=t.c.attempts + attempts,
                    http_status=http_status,
                    error=error,
                    completed_at=now_ms,
                )
            ).rowcount
        if done != 1:
            raise LedgerConflictError(f"ledger row {effect_id}/{receiver} is no longer claimed by {owner}")

    def release(self, effect_id: str, receiver: str, owner: str) -> bool:
        """Give back an unfinished claim of ours whose request cannot have landed (shutdown)."""
        t = self._table
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    sa.delete(t).where(
                        t.c.effect_id == effect_id, t.c.receiver == receiver, t.c.owner == owner, t.c.status == CLAIMED
                    )
                ).rowcount
                == 1
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
