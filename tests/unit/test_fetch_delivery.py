"""The consumer's record hand-off without tasks (streams/kafka/fetch.py), on a real mode Service.

It must behave as mode's ``wait_first`` does for faust's fetch loop: a delivery that
completes at once returns at once; one that waits resumes when what it waits for is done
(with its result or its exception raised inside it); one still waiting when the flow is
suspended is cancelled, and sees the cancellation where it waits.
"""

from __future__ import annotations

import asyncio
import warnings
from types import SimpleNamespace
from typing import Any

import pytest
from mode import Service

from streams.kafka.fetch import deliver_without_tasks


def consumer() -> Any:
    app = SimpleNamespace(consumer=Service())
    deliver_without_tasks(app)
    return app.consumer


def test_a_delivery_that_does_not_wait_makes_no_task_and_closes_the_other_coroutine() -> None:
    async def main() -> None:
        c, suspended = consumer(), asyncio.Event()
        delivered: list[int] = []

        async def deliver(n: int) -> int:
            delivered.append(n)
            return n

        before = len(asyncio.all_tasks())
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a coroutine never awaited would warn
            result = await c.wait_first(deliver(1), suspended.wait())
        assert delivered == [1] and result.done and result.results == [1] and not result.stopped
        assert len(asyncio.all_tasks()) == before

    asyncio.run(main())


def test_a_delivery_that_waits_resumes_with_the_result_or_the_exception_inside_it() -> None:
    async def main() -> None:
        c, suspended = consumer(), asyncio.Event()
        gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        seen: list[str] = []

        async def deliver() -> None:
            await asyncio.sleep(0)  # a bare yield first
            seen.append(await gate)
            try:
                await failing
            except ValueError as exc:
                seen.append(f"raised {exc}")

        failing: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        waiting = asyncio.ensure_future(c.wait_first(deliver(), suspended.wait()))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiting.done()
        gate.set_result("put")
        failing.set_exception(ValueError("full"))
        await asyncio.wait_for(waiting, 5)
        assert seen == ["put", "raised full"]

    asyncio.run(main())


def test_a_waiting_delivery_is_cancelled_where_it_waits_when_the_flow_is_suspended() -> None:
    async def main() -> None:
        c, suspended = consumer(), asyncio.Event()
        queue_full: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        outcome: list[str] = []

        async def deliver() -> None:
            try:
                await queue_full
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise

        waiting = asyncio.ensure_future(c.wait_first(deliver(), suspended.wait()))
        await asyncio.sleep(0)
        suspended.set()
        await asyncio.wait_for(waiting, 5)
        for _ in range(3):
            await asyncio.sleep(0)
        assert outcome == ["cancelled"] and queue_full.cancelled()

    asyncio.run(main())


def test_an_error_before_the_first_wait_propagates_and_other_calls_go_through_unchanged() -> None:
    async def main() -> None:
        c, suspended = consumer(), asyncio.Event()

        async def broken() -> None:
            raise KeyError("decode")

        with pytest.raises(KeyError):
            await c.wait_first(broken(), suspended.wait())
        suspended.set()
        result = await c.wait_first(suspended.wait(), timeout=1.0)  # not the fetch loop's call shape
        assert result.done and not result.stopped

    asyncio.run(main())
