"""The rebalance hooks run before faust's revoke waits for the agents' records, and only on a rebalance."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from streams.kafka.revoke import run_before_revoke


def app_with(calls: list[str], *, rebalancing: bool, stopping: bool) -> SimpleNamespace:
    async def wait_empty() -> None:
        calls.append("wait_empty")

    return SimpleNamespace(
        consumer=SimpleNamespace(wait_empty=wait_empty), rebalancing=rebalancing, should_stop=stopping
    )


def test_hooks_run_before_the_wait_on_a_rebalance_and_a_failing_one_does_not_stop_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    app = app_with(calls, rebalancing=True, stopping=False)
    hooks = []
    run_before_revoke(app, hooks)

    async def broken() -> None:
        calls.append("broken")
        raise RuntimeError("boom")

    async def sinks() -> None:
        calls.append("sinks")

    hooks += [broken, sinks]  # added after: the list is read at each revoke
    with caplog.at_level(logging.ERROR):
        asyncio.run(app.consumer.wait_empty())
    assert calls == ["broken", "sinks", "wait_empty"]
    assert "a rebalance hook failed" in caplog.text


@pytest.mark.parametrize(("rebalancing", "stopping"), [(False, False), (True, True), (False, True)])
def test_hooks_do_not_run_outside_a_rebalance_or_on_a_stop(rebalancing: bool, stopping: bool) -> None:
    calls: list[str] = []
    app = app_with(calls, rebalancing=rebalancing, stopping=stopping)

    async def hook() -> None:
        calls.append("hook")

    run_before_revoke(app, [hook])
    asyncio.run(app.consumer.wait_empty())
    assert calls == ["wait_empty"]
