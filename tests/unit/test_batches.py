"""The batch reader's bookkeeping against faust's own objects (app, conductor, consumer, messages; nothing started).

What must hold for at-least-once (streams/kafka/batches.py): a batch is what is queued, up to
the maximum; a record taken is tracked (a rebalance waits for it); it is acknowledged only
after its handler returned; a batch whose handler raised is handled again until it succeeds,
or released (never counted toward the commit) when a rebalance took its partitions meanwhile;
a record of an older generation or read while flow is suspended is not handed over and not
counted. Pipelined: batch N+1 is begun before N is finished, each is acknowledged after its
own finish, and a failure redoes both from the start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import faust
import pytest
from faust.types.tuples import ConsumerMessage

from streams.kafka import batches
from streams.kafka.batches import BatchReader
from streams.kafka.redelivery import guard_redelivery


def make_reader(max_batch: int = 3, linger_s: float = 0.0) -> tuple[faust.App, BatchReader]:
    app = faust.App("t-batches", broker="kafka://127.0.0.1:1", store="memory://")
    guard_redelivery(app)
    reader = BatchReader(
        app, app.topic("ev", value_serializer="raw", key_serializer="raw"), max_batch=max_batch, linger_s=linger_s
    )
    return app, reader


async def enqueue(app: faust.App, reader: BatchReader, offsets: Sequence[int], generation: int | None = None) -> None:
    await app.topics._update_indices()  # what faust runs when the subscription is set: the topic becomes acking
    app.flow_control.resume()
    for offset in offsets:
        gen = app.consumer_generation_id if generation is None else generation
        message = ConsumerMessage("ev", 0, offset, 0.0, 0, {}, b"k", b"v", None, generation_id=gen)
        message.incref()  # as the conductor does, once per channel
        reader.queue.put_nowait(await reader.channel.decode(message))


def acked(app: faust.App) -> list[int]:
    return sorted(offset for offsets in app.consumer._acked.values() for offset in offsets)


def unacked(app: faust.App) -> list[int]:
    return sorted(m.offset for m in app.consumer._unacked_messages)


def offsets(events: Sequence[Any]) -> list[int]:
    return [e.message.offset for e in events]


def test_a_batch_is_what_is_queued_up_to_the_maximum_and_is_tracked_until_acknowledged() -> None:
    async def main() -> None:
        app, reader = make_reader(max_batch=3)
        await enqueue(app, reader, range(5))
        first = await reader.next_batch()
        assert offsets(first) == [0, 1, 2]
        assert unacked(app) == [0, 1, 2] and acked(app) == []  # a rebalance would wait for them
        reader.acknowledge(first)
        assert acked(app) == [0, 1, 2] and unacked(app) == []
        assert offsets(await reader.next_batch()) == [3, 4]

    asyncio.run(main())


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches, "RETRY_FIRST_S", 0.001)


def test_run_acknowledges_after_the_handler_and_handles_a_failed_batch_again_until_it_succeeds() -> None:
    async def main() -> None:
        app, reader = make_reader(max_batch=2)
        await enqueue(app, reader, range(4))
        seen: list[list[int]] = []

        async def handle(events: Sequence[Any]) -> None:
            seen.append(offsets(events))
            assert acked(app) == [] or len(seen) > 2  # nothing acknowledged before a handler returns
            if len(seen) == 1:
                raise RuntimeError("produce failed")
            if len(seen) == 3:
                app._stopped.set()  # after the second batch: run() returns

        # should_stop is read from the app's stopped flag
        await asyncio.wait_for(reader.run(handle), 5)
        # the failed batch is handled again at once, not left for a rebalance that may never come
        # (it used to be released: undecided, and the commit stuck behind it until a restart)
        assert seen == [[0, 1], [0, 1], [2, 3]]
        assert acked(app) == [0, 1, 2, 3] and unacked(app) == []

    asyncio.run(main())


def test_a_failed_batch_whose_partitions_moved_meanwhile_is_released_to_be_read_again() -> None:
    async def main() -> None:
        app, reader = make_reader(max_batch=2)
        await enqueue(app, reader, range(2))
        seen: list[list[int]] = []

        async def handle(events: Sequence[Any]) -> None:
            seen.append(offsets(events))
            app.consumer_generation_id += 1  # a rebalance while the batch failed
            app._stopped.set()
            raise RuntimeError("produce failed")

        await asyncio.wait_for(reader.run(handle), 5)
        assert seen == [[0, 1]]  # not handled again by a worker that may no longer own the partition
        assert acked(app) == [] and unacked(app) == []  # not counted, and no rebalance waits for it

    asyncio.run(main())


def test_records_of_an_older_generation_or_read_while_flow_is_suspended_are_released_not_handed_over() -> None:
    async def main() -> None:
        app, reader = make_reader(max_batch=10)
        app.consumer_generation_id = 7
        await enqueue(app, reader, [0, 1], generation=6)
        await enqueue(app, reader, [2])
        batch = await reader.next_batch()  # held: faust tracks unacknowledged messages in a WeakSet
        assert offsets(batch) == [2]
        assert acked(app) == [] and unacked(app) == [2]
        await enqueue(app, reader, [3])
        app.flow_control.suspend()
        waiting = asyncio.ensure_future(reader.next_batch())
        await asyncio.sleep(0)
        assert not waiting.done()  # offset 3 was released, nothing handed over yet
        assert unacked(app) == [2]
        app.flow_control.resume()
        await enqueue(app, reader, [4])
        assert offsets(await asyncio.wait_for(waiting, 5)) == [4]
        assert acked(app) == []

    asyncio.run(main())


@pytest.mark.parametrize("linger_s, expected", [(0.0, [[0], [1]]), (0.2, [[0, 1]])])
def test_a_linger_lets_a_small_batch_wait_for_more(linger_s: float, expected: list[list[int]]) -> None:
    async def main() -> list[list[int]]:
        app, reader = make_reader(max_batch=10, linger_s=linger_s)
        await enqueue(app, reader, [0])

        async def later() -> None:
            await asyncio.sleep(0.05)
            await enqueue(app, reader, [1])

        task = asyncio.ensure_future(later())
        got = [offsets(await reader.next_batch())]
        await task
        if len(got[0]) < 2:
            got.append(offsets(await reader.next_batch()))
        return got

    assert asyncio.run(main()) == expected


def test_a_batch_tells_fausts_monitor_its_partitions_events_reached_a_handler() -> None:
    """faust's consumer checks each partition's last inbound time against stream_processing_timeout; the batch loop
    never told it, so events after five quiet minutes logged "Stream has not started processing TP(...)" at ERROR
    (a fault probe counted 133) while they were decided at once."""

    async def main() -> None:
        app, reader = make_reader(max_batch=3)
        app.monitor.stream_inbound_time.clear()
        await enqueue(app, reader, range(2))
        await reader.next_batch()
        assert list(app.monitor.stream_inbound_time) == [faust.types.TP("ev", 0)]

    asyncio.run(main())
