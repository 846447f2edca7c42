"""An incident's alerts: the distinct label sets of its episode, which filters match one by one.

A group incident (the pods of one alert name, the disks of one node) kept only its labels merged, the
latest alert's values winning: ``pod="a"`` missed the incident once pod b's alert came after. Rows from
before hold their merged labels as their one alert.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("alerts", JSON, nullable=False, server_default="[]"))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE incidents SET alerts = jsonb_build_array(labels) WHERE labels <> '{}'::jsonb")
    else:
        op.execute("UPDATE incidents SET alerts = json_array(json(labels)) WHERE labels <> '{}'")
    op.create_index("ix_incidents_alerts", "incidents", ["alerts"], postgresql_using="gin")


def downgrade() -> None:
    op.drop_index("ix_incidents_alerts", table_name="incidents")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("alerts")
