"""Fixtures of the fault harness; the harness report is printed at the end of the session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.faults import harness
from tests.sinks.fakes import FakeServices


@pytest.fixture(scope="module")
def fakes() -> Iterator[FakeServices]:
    services = FakeServices().start()
    yield services
    services.stop()


@pytest.fixture
def ledger_urls(postgres_url: str):
    """A fresh PostgreSQL schema per run: a run's ledger must not know another run's deliveries."""

    def make() -> str:
        schema = f"faults_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(postgres_url)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
        sep = "&" if "?" in postgres_url else "?"
        return f"{postgres_url}{sep}options=-csearch_path%3D{schema}"

    return make


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001 - pytest's hook signature
    if not harness.REPORTS:
        return
    terminalreporter.section("fault harness report")
    terminalreporter.write_line(harness.HEADER)
    for rep in harness.REPORTS:
        terminalreporter.write_line(rep.row())
    for rep in harness.REPORTS:
        for eid in rep.ambiguous:
            terminalreporter.write_line(f"{rep.scenario}: ambiguous repeat (one allowed per hang / drop): {eid}")
        for reason in rep.reasons:
            terminalreporter.write_line(f"{rep.scenario}: events.dlq reason: {reason}")
