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

QUIET_S = 2.0
TICK_AFTER_S = 0.6


def test_settled_only_when_caught_up_for_the_whole_quiet_period(settings: Settings):
    assert main(["topics", "apply"]) == 0
    topic = settings.topic_prefix + "events.timer"

    async def run() -> tuple[dict[str, int], float, float, float]:
        # the producer and the group's consumer are started first: the "tick" itself then takes milliseconds
        group = AIOKafkaConsumer(**settings.kafka_client_config(), group_id=settings.app_id, enable_auto_commit=False)
        await group.start()
        group.assign([TopicPartition(topic, 0)])
        try:
            async with EventProducer(settings) as producer:
                started = time.monotonic()
                settling = asyncio.create_task(commit_lag(settings, timeout=30.0, quiet_s=QUIET_S))
                await asyncio.sleep(TICK_AFTER_S)  # caught up by now (nothing appended yet): not settled yet
                meta = await (await producer.kafka.send(topic, b"a tick's timer", key=b"s", partition=0))
                await group.commit({TopicPartition(topic, 0): meta.offset + 1})
                committed_at = time.monotonic()
                lag, caught_up = await settling
        finally:
            await group.stop()
        return lag, caught_up, committed_at, started

    lag, caught_up, committed_at, started = asyncio.run(run())
    assert lag == {}
    assert committed_at - started < QUIET_S  # the tick came inside the first quiet period
    # without the quiet period the first poll (nothing appended yet, nothing behind) was "settled"
    assert caught_up >= committed_at - 0.05
    assert time.monotonic() - started >= TICK_AFTER_S + QUIET_S


def test_no_quiet_period_is_the_first_caught_up_poll(settings: Settings):
    assert main(["topics", "apply"]) == 0
    started = time.monotonic()
    lag, caught_up = asyncio.run(commit_lag(settings, timeout=30.0))
    assert lag == {}
    assert caught_up - started < 5.0
