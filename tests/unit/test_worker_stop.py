"""The worker's stop hooks run before faust stops the app, and one that fails does not keep it from stopping."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import faust

from agents.worker import make_faust_worker
from streams.settings import Settings


def test_stop_hooks_run_in_order_and_a_failing_one_is_logged_not_raised(caplog):
    ran: list[str] = []

    async def first() -> None:
        ran.append("first")
        raise RuntimeError("the ledger is gone")

    async def second() -> None:
        ran.append("second")

    app = faust.App("opsloop-stoptest", broker="kafka://127.0.0.1:1")
    rt = SimpleNamespace(app=app, before_stop=[first, second])
    worker = make_faust_worker(rt, Settings.from_env(), redirect_stdouts=False)
    with caplog.at_level(logging.ERROR, logger="agents.worker"):
        asyncio.run(worker.on_stop())
    assert ran == ["first", "second"]
    assert "a stop hook failed; stopping anyway" in caplog.text and "the ledger is gone" in caplog.text
