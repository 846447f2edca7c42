"""One row per session: the incidents the read API and ``opsloop incidents list`` query.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("session_key", sa.String(512), primary_key=True),
        sa.Column("org", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(32), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("runbook", sa.String(255), nullable=False),
        sa.Column("labels", JSON, nullable=False),
        sa.Column("first_seen", sa.BigInteger, nullable=False),
        sa.Column("last_seen", sa.BigInteger, nullable=False),
        sa.Column("last_notified_at", sa.BigInteger, nullable=True),
        sa.Column("last_receivers", JSON, nullable=False),
        sa.Column("acked_by", sa.String(255), nullable=True),
        sa.Column("acked_at", sa.BigInteger, nullable=True),
        sa.Column("silenced_by", sa.String(1000), nullable=True),
        sa.Column("last_outcome", sa.String(64), nullable=False),
        sa.Column("last_decision_id", sa.String(128), nullable=False),
    )
    op.create_index("ix_incidents_status_last_seen", "incidents", ["status", "last_seen"])
    op.create_index("ix_incidents_last_seen", "incidents", ["last_seen"])
    op.create_index("ix_incidents_first_seen", "incidents", ["first_seen"])
    op.create_index("ix_incidents_org", "incidents", ["org"])
    op.create_index("ix_incidents_labels", "incidents", ["labels"], postgresql_using="gin")


def downgrade() -> None:
    op.drop_table("incidents")
