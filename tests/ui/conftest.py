"""The console tests' audit store: SQLite, seeded through the projector's write path (tests/ui/seed.py)."""

from __future__ import annotations

import pytest

from streams.db import make_engine
from tests.ui.seed import seed


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    seed(engine)
    yield engine
    engine.dispose()
