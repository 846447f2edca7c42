"""Shared fixtures: one real Kafka broker and one PostgreSQL per test session.

Set KAFKA_BOOTSTRAP or DATABASE_URL to use running ones instead. Tests stay apart
on the shared broker by a fresh topic prefix and consumer group each
(``opsloop_env``); a test that must stop a broker asks ``kafka_factory`` for its own.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from streams.devtools.broker import LocalKafka
from streams.devtools.processes import FAST_GROUP_ENV, WorkerProcess
from streams.settings import Settings

if TYPE_CHECKING:
    from tests.support.daemons import Daemons


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.close()


@pytest.fixture
def kafka_factory(tmp_path: Path) -> Iterator[Callable[[], LocalKafka]]:
    """Function-scoped brokers for tests that stop, kill or restart one."""
    brokers: list[LocalKafka] = []

    def make() -> LocalKafka:
        broker = LocalKafka(tmp_path / f"kafka-{len(brokers)}")
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    from tests.support.postgres import throwaway_url

    with throwaway_url() as url:
        yield url


@pytest.fixture
def pg_engine(postgres_url: str):
    """A SQLAlchemy engine (psycopg 3) on a fresh schema of the session's PostgreSQL."""
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine = sa.create_engine(postgres_url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def opsloop_env(kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment of an isolated opsloop: its own topic prefix, group and data dir.

    Set in this process (for Settings.from_env) and handed to worker processes.
    """
    tag = uuid.uuid4().hex[:8]
    env = {
        **FAST_GROUP_ENV,
        "KAFKA_BOOTSTRAP": kafka_bootstrap,
        "OPSLOOP_TOPIC_PREFIX": f"t{tag}.",
        "OPSLOOP_APP_ID": f"opsloop-t{tag}",
        "OPSLOOP_WEB_ENABLED": "false",
        "OPSLOOP_DATA_DIR": str(tmp_path / "data"),
        "OPSLOOP_LOG_LEVEL": "info",
        # A test's workers share one data dir on this host, so one SQLite ledger file: a single node.
        "OPSLOOP_SINK_SINGLE_NODE": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def settings(opsloop_env: dict[str, str]) -> Settings:
    return Settings.from_env()


@pytest.fixture
def topics(settings: Settings) -> Settings:
    """The catalogue's topics created under this test's prefix."""
    from streams.kafka.admin import apply
    from streams.kafka.catalogue import load_catalogue

    asyncio.run(apply(settings, load_catalogue(settings.topics_file)))
    return settings


@pytest.fixture
def worker_factory(opsloop_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real ``opsloop worker`` processes; all are stopped at the end of the test."""
    workers: list[WorkerProcess] = []

    def start(**extra_env: str) -> WorkerProcess:
        worker = WorkerProcess({**opsloop_env, **extra_env}, tmp_path / f"worker-{len(workers)}.log").start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    """Third-party servers a test starts; all stopped at its end, their logs attached to a failure."""
    from tests.support.daemons import Daemons

    running = Daemons()
    yield running
    for daemon in running:
        daemon.stop()


# Fixtures that start or reach a real service: a test using any of them (directly or through
# another fixture) is in the integration tier; every other test is in the fast tier.
SERVICE_FIXTURES = frozenset({"kafka_bootstrap", "kafka_factory", "postgres_url", "daemons"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tiers by what a test uses, not by hand: ``-m "not integration"`` is the fast tier."""
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> None:
    """On failure, attach the tail of each worker's and daemon's log: the first thing one needs."""
    if call.when != "call" or call.excinfo is None or not hasattr(item, "funcargs"):
        return
    running = item.funcargs.get("daemons")
    for daemon in running or ():
        item.add_report_section("call", f"{Path(daemon.cmd[0]).name} log", "\n".join(daemon.log().splitlines()[-60:]))
    tmp = item.funcargs.get("tmp_path")
    if item.funcargs.get("worker_factory") is None or tmp is None:
        return
    for log in sorted(Path(tmp).glob("worker-*.log")):
        item.add_report_section("call", log.name, "\n".join(log.read_text(errors="replace").splitlines()[-60:]))
