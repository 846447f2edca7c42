"""Which ledger a worker gets, and that it refuses one that cannot stop a second send (fast tier)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agents.sink import LedgerConfigError, check_ledger
from streams.settings import ROOT, Settings

LEDGER_ENV = ("DATABASE_URL", "OPSLOOP_DATABASE_URL", "OPSLOOP_SINK_DATABASE_URL", "OPSLOOP_SINK_SINGLE_NODE")
PG = "postgresql+psycopg://opsloop:pw-SECRET@db:5432/opsloop"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path):
    for name in LEDGER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPSLOOP_DATA_DIR", str(tmp_path / "data"))
    return monkeypatch


def test_without_a_shared_database_the_worker_refuses_a_sqlite_ledger(env) -> None:
    settings = Settings.from_env()
    assert settings.ledger_url().startswith("sqlite:///") and settings.ledger_url().endswith("/data/ledger.db")
    with pytest.raises(LedgerConfigError, match="OPSLOOP_SINK_SINGLE_NODE=true") as err:
        check_ledger(settings)
    assert "DATABASE_URL" in str(err.value) and err.value.exit_code == 1


def test_single_node_keeps_sqlite_and_says_what_losing_it_costs(env) -> None:
    env.setenv("OPSLOOP_SINK_SINGLE_NODE", "true")
    note = check_ledger(Settings.from_env())
    assert note is not None and "ledger.db" in note and "re-sends" in note


@pytest.mark.parametrize("var", ["DATABASE_URL", "OPSLOOP_SINK_DATABASE_URL"])
def test_a_shared_database_is_the_ledger_whatever_single_node_says(env, var: str) -> None:
    env.setenv(var, PG)
    settings = Settings.from_env()
    assert settings.ledger_url() == PG and check_ledger(settings) is None
    env.setenv("OPSLOOP_SINK_SINGLE_NODE", "true")
    assert check_ledger(Settings.from_env()) is None


def test_an_explicit_sqlite_url_is_still_one_host(env) -> None:
    env.setenv("OPSLOOP_SINK_DATABASE_URL", "sqlite:////var/lib/opsloop/ledger.db")
    with pytest.raises(LedgerConfigError, match="/var/lib/opsloop/ledger.db"):
        check_ledger(Settings.from_env())


def test_opsloop_worker_refuses_to_start_before_touching_kafka(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in LEDGER_ENV}
    env.update(KAFKA_BOOTSTRAP="127.0.0.1:1", OPSLOOP_DATA_DIR=str(tmp_path / "data"))  # nothing listens there
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli.main", "worker"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "delivery ledger would be the SQLite file" in proc.stderr and "OPSLOOP_SINK_SINGLE_NODE" in proc.stderr
    assert not (tmp_path / "data").exists()  # nothing was created
