"""Alembic environment: runs on the connection streams.audit.store.migrate passes in."""

from __future__ import annotations

from alembic import context

from streams.audit.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through streams.audit.store.migrate(engine) or `opsloop audit migrate`")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
