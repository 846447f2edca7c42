from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from streams.db import make_engine


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_db(request, tmp_path) -> Iterator[tuple[str, sa.Engine]]:
    """(url, engine) of an empty audit database on each backend: one contract, two stores."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.db'}"
        engine = make_engine(url)
        yield url, engine
        engine.dispose()
        return
    yield from _pg_schema(request.getfixturevalue("postgres_url"))


@pytest.fixture
def pg_audit_db(postgres_url) -> Iterator[tuple[str, sa.Engine]]:
    yield from _pg_schema(postgres_url)


def _pg_schema(postgres_url: str) -> Iterator[tuple[str, sa.Engine]]:
    schema = f"audit_{uuid.uuid4().hex[:10]}"
    admin = make_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{postgres_url}?options={quote(f'-csearch_path={schema}')}"
    engine = make_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
