"""The bench's "settled": caught up, and still caught up a ticker's two periods later.

A worker that has committed to the end of its input may still have work due: its ticker
appends the timers that came due (a storm's group notices) at its next tick. FLAT once
measured a worker as 28.7 % busy "idle" because the bench polled a lag of zero just
before that tick. Here a record appended and committed 0.6 s after the first caught-up
poll (as a tick would) must restart the wait.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.cli.main import main
from streams.devtools.bench.workers import commit_lag
from streams.kafka.producer import EventProducer
from streams.settings import Settings

QUIET_S = 1.5


async def append_and_commit(settings: Settings, after_s: float) -> float:
    """After ``after_s``, one record on events.timer and the group's commit past it; returns when committed."""
    await asyncio.sleep(after_s)
    topic = settings.topic_prefix + "events.timer"
    async with EventProducer(settings) as producer:
        meta = await (await producer.kafka.send(topic, b"a tick's timer", key=b"s", partition=0))
    group = AIOKafkaConsumer(**settings.kafka_client_config(), group_id=settings.app_id, enable_auto_commit=False)
    await group.start()
    try:
        group.assign([TopicPartition(topic, 0)])
        await group.commit({TopicPartition(topic, 0): meta.offset + 1})
    finally:
        await group.stop()
    return time.monotonic()


def test_settled_only_when_caught_up_for_the_whole_quiet_period(settings: Settings):
    assert main(["topics", "apply"]) == 0

    async def run() -> tuple[dict[str, int], float, float, float]:
        started = time.monotonic()
        late = asyncio.create_task(append_and_commit(settings, after_s=0.6))
        lag, caught_up = await commit_lag(settings, timeout=30.0, quiet_s=QUIET_S)
        return lag, caught_up, await late, started

    lag, caught_up, committed_at, started = asyncio.run(run())
    assert lag == {}
    # without the quiet period the first poll (nothing appended yet, nothing behind) was "settled"
    assert caught_up >= committed_at - 0.05
    assert time.monotonic() - started >= 0.6 + QUIET_S


def test_no_quiet_period_is_the_first_caught_up_poll(settings: Settings):
    assert main(["topics", "apply"]) == 0
    started = time.monotonic()
    lag, caught_up = asyncio.run(commit_lag(settings, timeout=30.0))
    assert lag == {}
    assert caught_up - started < 5.0
