"""The audit projection: events, decisions, effects, deliveries and projector offsets.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _source() -> list[sa.Column]:
    return [
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("event_id", sa.String(128), primary_key=True),
        sa.Column("session_key", sa.String(512), nullable=False),
        sa.Column("org", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("occurred_at", sa.BigInteger, nullable=False),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.Column("record", JSON, nullable=False),
        *_source(),
    )
    op.create_index("ix_audit_events_session_key", "audit_events", ["session_key"])
    op.create_index("ix_audit_events_occurred_at", "audit_events", ["occurred_at"])
    op.create_table(
        "audit_decisions",
        sa.Column("decision_id", sa.String(128), primary_key=True),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("session_key", sa.String(512), nullable=False),
        sa.Column("org", sa.String(128), nullable=False),
        sa.Column("decided_at", sa.BigInteger, nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("runbook", sa.String(255), nullable=False),
        sa.Column("record", JSON, nullable=False),
        *_source(),
    )
    op.create_index("ix_audit_decisions_event_id", "audit_decisions", ["event_id"])
    op.create_index("ix_audit_decisions_session_key", "audit_decisions", ["session_key"])
    op.create_index("ix_audit_decisions_decided_at", "audit_decisions", ["decided_at"])
    op.create_table(
        "audit_effects",
        sa.Column("effect_id", sa.String(128), primary_key=True),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("session_key", sa.String(512), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("receiver", sa.String(255), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("record", JSON, nullable=False),
        *_source(),
    )
    op.create_index("ix_audit_effects_event_id", "audit_effects", ["event_id"])
    op.create_index("ix_audit_effects_session_key", "audit_effects", ["session_key"])
    op.create_index("ix_audit_effects_created_at", "audit_effects", ["created_at"])
    op.create_table(
        "audit_deliveries",
        sa.Column("receipt_id", sa.String(300), primary_key=True),
        sa.Column("effect_id", sa.String(128), nullable=False),
        sa.Column("session_key", sa.String(512), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("completed_at", sa.BigInteger, nullable=False),
        sa.Column("record", JSON, nullable=False),
        *_source(),
    )
    op.create_index("ix_audit_deliveries_effect_id", "audit_deliveries", ["effect_id"])
    op.create_index("ix_audit_deliveries_session_key", "audit_deliveries", ["session_key"])
    op.create_index("ix_audit_deliveries_completed_at", "audit_deliveries", ["completed_at"])
    op.create_table(
        "projector_offsets",
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("projector_offsets", "audit_deliveries", "audit_effects", "audit_decisions", "audit_events"):
        op.drop_table(table)
