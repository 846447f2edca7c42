"""The worker's faust consumer runs on the worker's loop, not in a thread of its own (streams/kafka/inloop.py).

The behaviour through a real broker (fetch, rebalance, commits, SIGKILL) is what every worker
integration test and the fault harness exercise; these check the wiring they rely on.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from agents.worker import build_worker
from streams.kafka.inloop import InLoopConsumer, InLoopConsumerThread, consume_in_loop
from streams.settings import Settings


def test_a_worker_consumes_on_its_own_loop() -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        rt = build_worker(Settings.from_env(topic_prefix="never."))
        consumer = rt.app.consumer
        assert isinstance(consumer, InLoopConsumer)
        delegate = consumer._thread
        assert isinstance(delegate, InLoopConsumerThread)
        worker_loop = consumer.loop  # faust's app loop (the one set here, or one an earlier test left bound)
        assert delegate.thread_loop is worker_loop and delegate.parent_loop is worker_loop

        async def in_coroutine() -> int:
            return threading.get_ident()

        # faust hands call_thread coroutine functions and plain ones; both run here, in this thread
        assert worker_loop.run_until_complete(delegate.call_thread(in_coroutine)) == threading.get_ident()
        assert worker_loop.run_until_complete(delegate.call_thread(threading.get_ident)) == threading.get_ident()
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_too_late_once_the_consumer_exists() -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        rt = build_worker(Settings.from_env(topic_prefix="never."))
        consume_in_loop(rt.app)  # again: already in the loop, nothing to do
        from streams.kafka.app import create_app

        app = create_app(Settings.from_env(topic_prefix="never.")).app
        assert app.consumer is not None  # a threaded consumer made first
        with pytest.raises(RuntimeError, match="already exists"):
            consume_in_loop(app)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
