"""Micro-benchmark: inhibition with many firing sources, old path (tuple per batch, scan per flush) vs the index.

Run: PYTHONPATH=. .venv/bin/python -m tests.decide.bench_inhibition [--sources 18400]

Per batch the old context copied every session's inhibiting alerts into a tuple; the
index re-reads only the sessions that changed (here: 5 per batch). Per flush the old
gate scanned every source for each target alert; the index looks them up. The flush
is a real decide() call whose event first folds the session's due group timer (so
the whole group flush runs), with the old gate swapped back in for "before". One
process, interleaved rounds; prints figures, asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from streams.core import grouping
from streams.core.decide import Context, Verdict, decide
from streams.core.inhibition import InhibitorIndex
from streams.core.tables import SilenceCache, context_from_tables
from streams.kafka.tracked import TrackedDict
from tests.decide.helpers import MIN, T0, alert, starter_set
from tests.decide.test_inhibition_index import _old_gates

WARNING = Verdict(category="availability", severity="warning", classifier="test-1")


def best_us(fn, n: int, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sources", type=int, default=18_400)
    args = parser.parse_args()
    rset = starter_set()
    base = Context(runbooks=rset)
    per_session = 4
    table = TrackedDict()
    for s in range(args.sources // per_session):
        table[f"acme:svc{s}:down"] = [
            {
                "org": "acme",
                "service": f"svc{s}",
                "severity": "urgent",
                "alertname": "PrometheusTargetMissing",
                "instance": f"svc{s}-{i}:9100",
                "category": "availability",
            }
            for i in range(per_session)
        ]
    cache = SilenceCache()
    index = InhibitorIndex(rset.routing.inhibit_rules)
    index.sync(table)
    keys = list(table)

    def touch_five() -> set[str]:
        for k in keys[:5]:
            table[k] = list(table[k])
        return set(keys[:5])

    old_ctx = context_from_tables(base, silences={}, inhibitors=table, cache=cache)
    new_ctx = context_from_tables(base, silences={}, inhibitors=table, cache=cache, index=index)
    assert list(new_ctx.inhibitors) == list(old_ctx.inhibitors)

    # a warning session whose group timer is due: the next event folds the flush first
    first = alert("HostHighCpuLoad", service="api", session="acme:api:cpu", at=T0, eid="w1")
    later = alert(
        "HostHighCpuLoad", service="api", instance="api-2:9100", session="acme:api:cpu", at=T0 + 10 * MIN, eid="w2"
    )
    state = decide(None, first, replace(new_ctx, verdict=WARNING)).state

    def flush_new():
        return decide(state, later, replace(new_ctx, verdict=WARNING))

    new_gates, old_gates = grouping.FLUSH_GATES, _old_gates()

    def flush_old():
        grouping.FLUSH_GATES = old_gates
        try:
            return decide(state, later, replace(old_ctx, verdict=WARNING))
        finally:
            grouping.FLUSH_GATES = new_gates

    assert flush_new().all_records == flush_old().all_records and flush_new().fired, "the same flush both ways"
    ctx_old = best_us(lambda: context_from_tables(base, silences={}, inhibitors=table, cache=cache), 20)
    ctx_new = best_us(
        lambda: context_from_tables(
            base, silences={}, inhibitors=table, cache=cache, index=index, changed=touch_five()
        ),
        200,
    )
    f_old = best_us(flush_old, 50)
    f_new = best_us(flush_new, 50)
    f_none = best_us(lambda: decide(state, later, replace(base, verdict=WARNING)), 50)
    print(f"{len(index)} inhibiting alerts in {len(table)} sessions; best of 3 interleaved rounds (µs)")
    print(f"{'':38} {'before':>9} {'after':>9}")
    print(f"{'batch context (after: 5 sessions changed)':38} {ctx_old:9.0f} {ctx_new:9.0f}")
    print(f"{'decide with a group flush':38} {f_old:9.0f} {f_new:9.0f}")
    print(f"{'the same decide, no inhibitors at all':38} {f_none:9.0f}")


if __name__ == "__main__":
    main()
