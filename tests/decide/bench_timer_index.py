"""Micro-benchmark: one ticker pass over a big timers table, scan (before) vs the due-time index (after).

Run: PYTHONPATH=. .venv/bin/python -m tests.decide.bench_timer_index [--sessions 20000]

The table holds ``--sessions`` rows of pending timers (after a storm: every session's
repeat and escalation timers), 20 of them due; between ticks decide rewrites 50 rows.
Before: what the ticker did (read every row for the pending gauge and for due_timers).
After: sync the changed rows into the index, then ask it. One process, interleaved
rounds; prints figures, asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import time

from streams.core.timer_index import TimerIndex
from streams.core.timers import due_timers
from streams.kafka.tracked import Changes, TrackedDict


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=20_000)
    args = parser.parse_args()
    now = 1_700_000_000_000
    table = TrackedDict()
    changes = Changes()
    table.watchers.append(changes)
    for i in range(args.sessions):
        at = now - 1000 if i < 20 else now + 3_600_000 + i
        table[f"s{i}"] = {
            "p": i % 4,
            "org": "acme",
            "t": {
                f"grp:{i}": {"at": at, "purpose": "group", "step": 0, "data": {}},
                f"esc:{i}:1": {"at": at + 600_000, "purpose": "escalation", "step": 1, "data": {}},
            },
        }
    index = TimerIndex()
    index.sync(table, changes.drain())
    active = {0, 1, 2, 3}
    clock = {p: now for p in active}.get
    keys = list(table)[100:150]

    def rewrite():
        for k in keys:
            table[k] = dict(table[k])

    def before():
        entries = list(table.items())
        pending = sum(len(e.get("t") or {}) for _, e in entries if e and e.get("p") in active)
        return pending, due_timers(entries, clock, active)

    def after():
        index.sync(table, changes.drain())
        return index.pending(active), index.due(active, clock)

    rewrite()
    assert before() == after()
    best = {"before": float("inf"), "after": float("inf")}
    for _ in range(5):
        for name, fn in (("before", before), ("after", after)):
            rewrite()
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], (time.perf_counter() - start) * 1e6)
    print(f"{args.sessions} sessions with pending timers, 20 due, 50 rows rewritten per tick; best of 5 (µs per tick)")
    print(f"{'before (scan)':>14} {best['before']:10.0f}\n{'after (index)':>14} {best['after']:10.0f}")


if __name__ == "__main__":
    main()
