"""The worker's logging: faust's spinner must not drop the root logger to DEBUG."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import faust
import pytest

from agents.worker import make_faust_worker
from streams.logs import QuietClients
from streams.settings import Settings


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("level", ["info", "warning", "error"])
def test_worker_logging_keeps_the_configured_level_so_debug_records_are_never_built(level, restore_logging):
    settings = Settings.from_env().model_copy(update={"log_level": level})
    app = faust.App(f"opsloop-logtest-{level}", broker="kafka://127.0.0.1:1")
    worker = make_faust_worker(SimpleNamespace(app=app, before_stop=[]), settings, redirect_stdouts=False)
    worker._setup_logging()  # what faust.Worker.execute_from_commandline does first
    assert logging.getLogger().level == logging.getLevelName(level.upper())
    assert logging.getLogger("aiokafka").isEnabledFor(logging.DEBUG) is False
    assert logging.getLogger("faust").isEnabledFor(logging.DEBUG) is False
    assert worker.spinner is None
    # faust's partition tables and the clients' noise are kept out of the log (streams.logs.QuietClients)
    assert logging.getLogger("faust.assignor").isEnabledFor(logging.INFO) is False
    assert any(isinstance(f, QuietClients) for h in logging.getLogger().handlers for f in h.filters)


def test_plain_faust_worker_would_lower_it_at_warning(restore_logging):
    # the behaviour QuietWorker exists for; if a faust upgrade drops it, this says so
    app = faust.App("opsloop-logtest-plain", broker="kafka://127.0.0.1:1")
    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker._setup_logging()
    assert logging.getLogger("aiokafka").isEnabledFor(logging.DEBUG) is True
