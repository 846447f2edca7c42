"""Does one destination that hangs delay deliveries to the others? Measured, printed.

Healthy receivers (Slack, Teams, PagerDuty, webhook) and one Slack receiver that
either answers (baseline) or hangs past the read timeout (down). The same
interleaved burst of effects goes through the dispatcher (per-destination queues)
and, for comparison, through a serial loop that awaits each delivery in outbox
order (what a consumer loop without fan-out does). Printed: latency from submit
to settled for the healthy deliveries, p50 / p95 / max, side by side.

    .venv/bin/python -m tests.sinks.bench_isolation [--n 40] [--serial-n 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from streams.db import make_engine
from tests.sinks.conftest import WEBHOOK_KEY, receivers_for
from tests.sinks.fakes import Answer, FakeServices
from tests.sinks.helpers import FAST, Harness, make_effect

HEALTHY = (("slack-a", "slack"), ("teams", "teams"), ("pd", "pagerduty"), ("hooks", "webhook"))
DOWN = ("slack-c", "slack")
POLICY = replace(FAST, read_timeout_s=1.0, ambiguous_pause_s=0.3, max_total_s=10)


def effects(n: int, tag: str) -> list[dict]:
    out = []
    for i in range(n):
        for name, channel in (*HEALTHY, DOWN):
            out.append(make_effect(name, channel, title=f"{tag} {i}", thread_key=f"{tag}-{name}-{i}"))
    return out


def summary(latencies_ms: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)
    return {
        "n": len(ordered),
        "p50": statistics.median(ordered),
        "p95": ordered[max(0, int(round(0.95 * len(ordered))) - 1)],
        "max": ordered[-1],
    }


async def _fanout(fakes: FakeServices, db: Path, n: int, down: bool, tag: str) -> tuple[dict[str, float], int]:
    """Through the dispatcher; returns healthy latency stats and how many down-destination effects were still pending."""
    receivers, env = receivers_for(fakes)
    if down:
        fakes.script("slack", DOWN[0], *[Answer(200, "ok", hang_s=30)] * (n * 2))
    batch = effects(n, tag)
    latencies: list[float] = []
    pending_down_when_healthy_done = 0
    async with Harness(receivers, make_engine(f"sqlite:///{db}"), env, policy=POLICY) as h:
        start = time.perf_counter()
        healthy_futures, down_futures = [], []
        for effect in batch:
            fut = await h.submit(effect)
            is_down = effect["notify"]["receiver"] == DOWN[0]
            (down_futures if is_down else healthy_futures).append(fut)
            if not is_down:
                fut.add_done_callback(lambda _f: latencies.append((time.perf_counter() - start) * 1000))
        await asyncio.wait_for(asyncio.gather(*healthy_futures), 60)
        pending_down_when_healthy_done = sum(1 for f in down_futures if not f.done())
        if not down:
            await asyncio.wait_for(asyncio.gather(*down_futures), 60)
    if down:
        fakes._scripts.pop(("slack", DOWN[0]), None)  # noqa: SLF001 - leave the fake as found
    return summary(latencies), pending_down_when_healthy_done


async def _serial(fakes: FakeServices, db: Path, n: int, down: bool, tag: str) -> dict[str, float]:
    """The baseline: the same dispatcher and ledger, but the reader awaits each delivery in outbox order."""
    receivers, env = receivers_for(fakes)
    if down:
        fakes.script("slack", DOWN[0], *[Answer(200, "ok", hang_s=30)] * (n * 2))
    latencies: list[float] = []
    async with Harness(receivers, make_engine(f"sqlite:///{db}"), env, policy=POLICY) as h:
        start = time.perf_counter()
        for effect in effects(n, tag):
            await (await h.submit(effect))
            if effect["notify"]["receiver"] != DOWN[0]:
                latencies.append((time.perf_counter() - start) * 1000)
    if down:
        fakes._scripts.pop(("slack", DOWN[0]), None)  # noqa: SLF001
    return summary(latencies)


def measure(fakes: FakeServices, n: int, serial_n: int = 0) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results: dict[str, object] = {
            "fanout_all_up": asyncio.run(_fanout(fakes, root / "a.db", n, False, "up"))[0],
        }
        down_stats, pending = asyncio.run(_fanout(fakes, root / "b.db", n, True, "down"))
        results["fanout_one_down"] = down_stats
        results["down_pending_when_healthy_done"] = pending
        if serial_n:
            results["serial_all_up"] = asyncio.run(_serial(fakes, root / "c.db", serial_n, False, "s-up"))
            results["serial_one_down"] = asyncio.run(_serial(fakes, root / "d.db", serial_n, True, "s-down"))
    return results


def render(results: dict[str, object], n: int, serial_n: int) -> str:
    lines = [
        f"healthy-destination latency, submit → settled (ms); {len(HEALTHY)} healthy receivers + 1 that "
        f"hangs past a {POLICY.read_timeout_s:.0f}s read timeout",
        f"{'run':<44}{'n':>6}{'p50':>10}{'p95':>10}{'max':>10}",
    ]
    rows = [
        ("fan-out, all up", "fanout_all_up", n),
        ("fan-out, one destination down", "fanout_one_down", n),
        ("serial baseline, all up", "serial_all_up", serial_n),
        ("serial baseline, one down", "serial_one_down", serial_n),
    ]
    for label, key, count in rows:
        stats = results.get(key)
        if isinstance(stats, dict):
            lines.append(
                f"{label + f' ({count}/dest)':<44}{stats['n']:>6}{stats['p50']:>10.1f}{stats['p95']:>10.1f}{stats['max']:>10.1f}"
            )
    lines.append(
        f"down destination's effects still pending when every healthy one had settled: "
        f"{results['down_pending_when_healthy_done']} of {n}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=40, help="effects per destination")
    parser.add_argument("--serial-n", type=int, default=5, help="effects per destination for the serial baseline")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)  # the down destination's dead letters are expected
    fakes = FakeServices(webhook_keys={"hooks": WEBHOOK_KEY}).start()
    try:
        print(render(measure(fakes, args.n, args.serial_n), args.n, args.serial_n))
    finally:
        fakes.stop()


if __name__ == "__main__":
    main()
