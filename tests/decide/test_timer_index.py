"""The ticker's due-time index answers what the scan of the whole timers table answered, and ticks never overlap."""

from __future__ import annotations

import asyncio
import random

import pytest

from agents.timers import Ticker
from streams.core.timer_index import TimerIndex
from streams.core.timers import PartitionClock, due_timers
from streams.kafka.codec import default_codec
from streams.kafka.tracked import TrackedDict
from streams.settings import TimerSettings


def random_row(rng: random.Random, base: int) -> dict:
    timers = {
        f"t{j}": {"at": base + rng.randint(-50, 200), "purpose": "group", "step": 0, "data": {}}
        for j in rng.sample(range(6), rng.randint(1, 4))
    }
    return {"p": rng.randint(0, 3), "org": rng.choice(["acme", "beta"]), "t": timers}


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("tracked", [True, False])
def test_the_index_gives_due_timers_over_the_whole_table_tick_after_tick(seed, tracked):
    rng = random.Random(seed)
    table: dict = {}
    index = TimerIndex()
    changed: set[str] = set()
    now = 1_000
    for _ in range(40):
        for _ in range(rng.randint(0, 12)):  # decide writes, fires and removes rows between ticks
            key = f"s{rng.randint(0, 25)}"
            if rng.random() < 0.25:
                table.pop(key, None)
            else:
                table[key] = random_row(rng, now)
            changed.add(key)
        now += rng.randint(-20, 60)  # the hybrid clock may step back
        clocks = {p: (None if rng.random() < 0.1 else now + 10 * p) for p in range(4)}
        active = set(rng.sample(range(4), rng.randint(0, 4)))
        index.sync(table, set(changed) if tracked else None)
        changed.clear()
        assert index.due(active, clocks.get) == due_timers(list(table.items()), clocks.get, active)
        assert index.pending(active) == sum(len(e["t"]) for e in table.values() if e["p"] in active)


def test_stale_items_do_not_pile_up():
    index = TimerIndex()
    for i in range(20_000):  # one session rescheduled over and over
        index.set("s", {"p": 0, "org": "acme", "t": {"grp": {"at": 10**9 + i}}})
    assert index._items <= 4 * index._live + 1024 + 1


def test_a_tick_that_comes_while_the_previous_one_runs_is_skipped():
    started, release = asyncio.Event(), None
    sent = []

    async def send(key, value):
        sent.append(key)
        started.set()
        await release.wait()
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    clock = PartitionClock()
    clock.observe(0, 2_000)
    table = TrackedDict(
        {"s1": {"p": 0, "org": "acme", "t": {"g": {"at": 1_000, "purpose": "group", "step": 0, "data": {}}}}}
    )
    ticker = Ticker(timers=table, clock=clock, settings=TimerSettings(clock="event"), codec=default_codec(), send=send)

    async def run():
        nonlocal release
        release = asyncio.Event()
        first = asyncio.create_task(ticker.tick({0}, mono=100.0))
        await started.wait()
        second = await ticker.tick({0}, mono=100.5)  # the first is blocked on the broker
        release.set()
        return await first, second

    assert asyncio.run(run()) == (1, 0)
    assert ticker.skipped == 1 and sent == [b"s1"] and not ticker.running
