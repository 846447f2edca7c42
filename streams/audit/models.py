"""The audit projection: events, decisions, effects and deliveries as SQL rows.

Every row keeps where it came from (topic, partition, offset), and
``projector_offsets`` holds the next offset per partition, written in the same
transaction as the rows; so after a crash the projector resumes exactly where its
last committed transaction ended. Schema changes go through Alembic
(``streams/audit/migrations``), never ``create_all`` on a live database.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Json = sa.JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class Source:
    """Where a row was read from: the Kafka coordinates of its record."""

    topic: Mapped[str] = mapped_column(sa.String(255))
    partition: Mapped[int] = mapped_column(sa.Integer)
    offset: Mapped[int] = mapped_column(sa.BigInteger)


class EventRow(Source, Base):
    __tablename__ = "audit_events"
    event_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    session_key: Mapped[str] = mapped_column(sa.String(512), index=True)
    org: Mapped[str] = mapped_column(sa.String(128))
    kind: Mapped[str] = mapped_column(sa.String(32))
    type: Mapped[str] = mapped_column(sa.String(128))
    source: Mapped[str] = mapped_column(sa.String(128))
    occurred_at: Mapped[int] = mapped_column(sa.BigInteger, index=True)
    received_at: Mapped[int] = mapped_column(sa.BigInteger)
    record: Mapped[dict[str, Any]] = mapped_column(Json)


class DecisionRow(Source, Base):
    __tablename__ = "audit_decisions"
    decision_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    event_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    session_key: Mapped[str] = mapped_column(sa.String(512), index=True)
    org: Mapped[str] = mapped_column(sa.String(128))
    decided_at: Mapped[int] = mapped_column(sa.BigInteger, index=True)
    category: Mapped[str] = mapped_column(sa.String(64))
    severity: Mapped[str] = mapped_column(sa.String(32))
    outcome: Mapped[str] = mapped_column(sa.String(64))
    runbook: Mapped[str] = mapped_column(sa.String(255))
    record: Mapped[dict[str, Any]] = mapped_column(Json)


class EffectRow(Source, Base):
    __tablename__ = "audit_effects"
    effect_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    event_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    session_key: Mapped[str] = mapped_column(sa.String(512), index=True)
    type: Mapped[str] = mapped_column(sa.String(32))
    channel: Mapped[str] = mapped_column(sa.String(32))
    receiver: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[int] = mapped_column(sa.BigInteger, index=True)
    record: Mapped[dict[str, Any]] = mapped_column(Json)


class DeliveryRow(Source, Base):
    __tablename__ = "audit_deliveries"
    # A receipt has no id of its own (one effect may get an "ambiguous" then a
    # "delivered" receipt), so its Kafka coordinates are its identity.
    receipt_id: Mapped[str] = mapped_column(sa.String(300), primary_key=True)
    effect_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    session_key: Mapped[str] = mapped_column(sa.String(512), index=True)
    channel: Mapped[str] = mapped_column(sa.String(32))
    status: Mapped[str] = mapped_column(sa.String(32))
    attempts: Mapped[int] = mapped_column(sa.Integer)
    completed_at: Mapped[int] = mapped_column(sa.BigInteger, index=True)
    record: Mapped[dict[str, Any]] = mapped_column(Json)


class ProjectorOffset(Base):
    __tablename__ = "projector_offsets"
    topic: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    partition: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(sa.BigInteger)


class DeadLetterRow(Base):
    """A record the projector could not store (too long for a column, a NUL, NaN in JSON, ...).

    ``record_json`` is the record as ASCII-only JSON text (NUL, lone surrogates and
    NaN are escaped or spelled out), truncated; the record itself stays in Kafka.
    """

    __tablename__ = "audit_dead_letters"
    topic: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    partition: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    offset: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    reason: Mapped[str] = mapped_column(sa.Text)
    record_json: Mapped[str] = mapped_column(sa.Text)
    failed_at: Mapped[int] = mapped_column(sa.BigInteger)


class IncidentRow(Base):
    """One row per session, kept current from its decisions (and its events' labels).

    ``status`` is firing, acknowledged, silenced or resolved (see
    :mod:`streams.audit.incidents`); ``labels`` is the latest labels the session's events
    carried, merged (what the list shows); ``alerts`` the distinct label sets of the
    episode's alerts, which Alertmanager matchers select incidents by (one of them must
    match them all); ``last_decision_id`` is the last decision folded in.
    """

    __tablename__ = "incidents"
    __table_args__ = (
        sa.Index("ix_incidents_status_last_seen", "status", "last_seen"),
        sa.Index("ix_incidents_last_seen", "last_seen"),
        sa.Index("ix_incidents_first_seen", "first_seen"),
        sa.Index("ix_incidents_org", "org"),
        sa.Index("ix_incidents_labels", "labels", postgresql_using="gin"),
        sa.Index("ix_incidents_alerts", "alerts", postgresql_using="gin"),
    )
    session_key: Mapped[str] = mapped_column(sa.String(512), primary_key=True)
    org: Mapped[str] = mapped_column(sa.String(128))
    status: Mapped[str] = mapped_column(sa.String(32))
    severity: Mapped[str] = mapped_column(sa.String(32))
    category: Mapped[str] = mapped_column(sa.String(64))
    runbook: Mapped[str] = mapped_column(sa.String(255))
    labels: Mapped[dict[str, Any]] = mapped_column(Json)
    alerts: Mapped[list[dict[str, str]]] = mapped_column(Json)
    first_seen: Mapped[int] = mapped_column(sa.BigInteger)
    last_seen: Mapped[int] = mapped_column(sa.BigInteger)
    last_notified_at: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    last_receivers: Mapped[list[str]] = mapped_column(Json)
    acked_by: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    acked_at: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    silenced_by: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    last_outcome: Mapped[str] = mapped_column(sa.String(64))
    last_decision_id: Mapped[str] = mapped_column(sa.String(128))
