"""The sinks under an alert storm: how many notifications per second, and CPU per notification. Printed.

N notify effects, each of its own session (a storm of distinct alerts), spread over R
webhook receivers, go through the real dispatcher, delivery client and ledger (on a
throwaway PostgreSQL, as in production, or ``--db sqlite``) to the bench's webhook
receiver running in a child process (so its CPU is not this process's). Printed:
notifications/s from the first submit to the last settle, this process's CPU per
notification (µs), duplicates at the receiver (an Idempotency-Key accepted twice).

    PYTHONPATH=. .venv/bin/python -m tests.sinks.bench_storm [--n 5000] [--receivers 3] [--db pg|sqlite]
        [--mode prompt|slow] [--lanes N] [--policy fast|default] [--learned-limit on|off|both]

``--mode slow`` is E2E's slow receiver (an answer after 0.1 s, 503 past 8 in flight);
``--lanes`` each receiver's ``concurrency``; ``--learned-limit both`` runs the storm
twice in one process, with and without the host limit learned from 503s
(:mod:`agents.sinks.concurrency`), side by side.

Run under ``py-spy record -o prof.svg -- python -m tests.sinks.bench_storm`` for the profile.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time
from typing import Any

from agents.sinks import delivery
from agents.sinks.concurrency import is_shed
from agents.sinks.delivery import RetryPolicy
from streams.db import make_engine
from streams.model.receivers import Receiver
from tests.sinks.helpers import FAST, Harness, bench_ledger_url, make_effect

KEY = "bench-signing-key"


def serve(conn: Any, mode: str) -> None:
    from streams.devtools.bench.alertmanager import SLOW_DELAY_S, SLOW_LIMIT
    from streams.devtools.bench.receiver import WebhookReceiver

    receiver = WebhookReceiver(mode, delay_s=SLOW_DELAY_S, limit=SLOW_LIMIT).start()
    conn.send(receiver.port)
    conn.recv()  # until the parent asks for the figures
    conn.send(receiver.summary())
    receiver.stop()


async def storm(
    url: str, n: int, receivers: int, port: int, lanes: int | None = None, policy: RetryPolicy = FAST
) -> tuple[float, float, int]:
    """(seconds, CPU seconds, effects not delivered)."""
    names = [f"hook-{i}" for i in range(receivers)]
    recv = {
        name: Receiver(
            name, "webhook", {"url": f"http://127.0.0.1:{port}/{name}"}, {"signing_key": "BENCH_KEY"}, concurrency=lanes
        )
        for name in names
    }
    effects = [
        make_effect(names[i % receivers], "webhook", session_key=f"storm:host-{i:06d}:HostDown", title=f"host {i}")
        for i in range(n)
    ]
    async with Harness(recv, make_engine(url), {"BENCH_KEY": KEY}, policy=policy, max_in_flight=n + 1) as h:
        h.dispatcher.settings = h.dispatcher.settings.model_copy(update={"backlog_per_destination": n + 1})
        cpu0, t0 = time.process_time(), time.perf_counter()
        futures = [await h.submit(e) for e in effects]
        statuses = await asyncio.wait_for(asyncio.gather(*futures), 600)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    bad = [s for s in statuses if s != "delivered"]
    if bad:
        print(f"not delivered: {len(bad)} ({sorted(set(bad))})")
    return wall, cpu, len(bad)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--receivers", type=int, default=3)
    parser.add_argument("--db", choices=("pg", "sqlite"), default="pg")
    parser.add_argument("--mode", choices=("prompt", "slow"), default="prompt")
    parser.add_argument("--lanes", type=int, help="each receiver's concurrency (default: the settings' 1)")
    parser.add_argument(
        "--policy", choices=("fast", "default"), default="fast", help="the tests' retry policy or the default"
    )
    parser.add_argument("--learned-limit", choices=("on", "off", "both"), default="on")
    args = parser.parse_args()
    policy = FAST if args.policy == "fast" else RetryPolicy()
    try:
        with bench_ledger_url(args.db, "bench-storm-") as url:
            run_storms(args, url, policy)
    finally:
        delivery.is_shed = is_shed


def run_storms(args: argparse.Namespace, url: str, policy: RetryPolicy) -> None:
    """One storm per learned-limit setting asked for, on the ledger at ``url``."""
    for learned in ("on", "off") if args.learned_limit == "both" else (args.learned_limit,):
        parent, child = mp.Pipe()
        proc = mp.get_context("spawn").Process(target=serve, args=(child, args.mode), daemon=True)
        proc.start()
        port = parent.recv()
        # off: the same code with no answer taken as a refusal, so no host is ever limited
        delivery.is_shed = is_shed if learned == "on" else (lambda response: False)
        wall, cpu, lost = asyncio.run(storm(url, args.n, args.receivers, port, args.lanes, policy))
        parent.send("done")
        got = parent.recv()
        proc.join(10)
        print(
            f"{args.n} notifications to {args.receivers} receivers ({args.db} ledger, {args.mode} receiver, "
            f"{args.lanes or 1} lanes each, {args.policy} policy, learned limit {learned}): "
            f"{args.n / wall:,.0f}/s, {1e6 * cpu / args.n:,.0f} µs CPU each, {lost} not delivered; receiver: "
            f"{got['notifications']:.0f} accepted, {got['duplicates']:.0f} duplicates, "
            f"{got['503s answered']:.0f} 503s",
            flush=True,
        )


if __name__ == "__main__":
    main()
