"""Micro-benchmark: faust's fetch loop handing a record to the conductor, mode's wait_first against ours.

Run: PYTHONPATH=. .venv/bin/python -m tests.unit.bench_fetch_delivery [--records 20000] [--rounds 5]

Both paths in one process, interleaved per round (the machine is shared: compare within a run).
The delivery coroutine completes at once, as the conductor's does when the channel queue
has room (the common case).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from types import SimpleNamespace

from mode import Service

from streams.kafka.fetch import deliver_without_tasks


async def deliver() -> None:
    return None


async def per_record(consumer: Service, n: int) -> float:
    suspended = asyncio.Event()
    t = time.perf_counter()
    for _ in range(n):
        await consumer.wait_first(deliver(), suspended.wait())
    return (time.perf_counter() - t) / n * 1e6


async def main(records: int, rounds: int) -> None:
    faust_way = Service()
    ours = SimpleNamespace(consumer=Service())
    deliver_without_tasks(ours)
    a, b = [], []
    for _ in range(rounds):
        a.append(await per_record(faust_way, records))
        b.append(await per_record(ours.consumer, records))
    print(f"mode wait_first (faust's fetch loop): {statistics.median(a):.1f} µs per record ({min(a):.1f}-{max(a):.1f})")
    print(f"deliver_without_tasks:               {statistics.median(b):.1f} µs per record ({min(b):.1f}-{max(b):.1f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.records, args.rounds))
