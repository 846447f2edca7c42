"""Fixtures of the fault harness; the harness report is printed at the end of the session."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.faults import harness
from tests.sinks.fakes import FakeServices


@pytest.fixture(scope="module")
def fakes() -> Iterator[FakeServices]:
    services = FakeServices().start()
    yield services
    services.stop()


@pytest.fixture
def ledger_urls(postgres_url: str) -> Callable[[], str]:
    """A fresh PostgreSQL schema per run: a run's ledger must not know another run's deliveries."""
    return lambda: harness.schema_url(postgres_url)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001 - pytest's hook signature
    if not harness.REPORTS:
        return
    terminalreporter.section("fault harness report")
    for line in harness.summary(harness.REPORTS):
        terminalreporter.write_line(line)
