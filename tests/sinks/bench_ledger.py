"""Micro-benchmark: the ledger's claim and completion of a storm's notifications, per row, on PostgreSQL. Printed.

Run: PYTHONPATH=. .venv/bin/python -m tests.sinks.bench_ledger [--rows 2000] [--batch 8] [--rounds 5] [--db pg|sqlite]

What E2E's prompt storm does to the ledger: a third of the notifications wait in the spill
(the destination's queue full), so they are claimed back from rows already in the table,
in the group commit's small batches (~7 a call in E2E). Each round spills ``--rows``
effects, claims them back and completes them, in batches of ``--batch``, once with the
claim of an existing row done row by row (the code before 2026-12-07: the INSERT did
nothing on a conflict, then a SELECT and an UPDATE each; the baseline kept below) and once with :meth:`Ledger.claim_many` as it is; the two
interleaved, alternating which goes first, in one process. Printed per round: this
thread's CPU per row for the claim and for the completion (µs), and whether both gave the
same claims. Also fresh claims (no spill) for scale.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from typing import Any

import sqlalchemy as sa

from agents.sinks.ledger import ClaimRequest, Completion, Ledger, Spill
from streams.db import make_engine
from tests.sinks.helpers import bench_ledger_url


class RowByRowLedger(Ledger):
    """The baseline: the claim's INSERT does nothing on a conflict, so every row already in the table (our own
    spilled ones included) is claimed by :meth:`Ledger._claim_existing`, a SELECT and an UPDATE each."""

    @functools.cached_property
    def _claim_insert(self) -> sa.Insert:
        t = self._table
        return self._insert().returning(t.c.effect_id, t.c.receiver, t.c.attempts, t.c.ambiguous, t.c.claims)


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def one_round(ledger: Ledger, receiver: str, rows: int, batch: int, spill: bool) -> tuple[float, float, list[Any]]:
    """(claim µs per row, completion µs per row, the claims' states) for ``rows`` effects to ``receiver``."""
    ids = [f"{receiver}-e{i}" for i in range(rows)]
    if spill:
        for chunk in _batches(ids, 500):
            spills = [Spill(e, receiver, "webhook", 0, 3, n, "{}") for n, e in enumerate(chunk)]
            ledger.spill_many(spills, "w1", 1_000)
    requests = [ClaimRequest(e, receiver, "webhook", 0, 3) for e in ids]
    t = time.thread_time()
    claims = [c for chunk in _batches(requests, batch) for c in ledger.claim_many(chunk, "w1", 2_000, 60_000)]
    claim_us = (time.thread_time() - t) / rows * 1e6
    done = [Completion(e, receiver, "delivered", 1, 200, None) for e in ids]
    t = time.thread_time()
    ok = [x for chunk in _batches(done, batch) for x in ledger.complete_many(chunk, "w1", 3_000)]
    complete_us = (time.thread_time() - t) / rows * 1e6
    assert all(ok), "a completion found its row taken"
    return claim_us, complete_us, [(c.state, c.status) for c in claims]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--db", choices=("pg", "sqlite"), default="pg")
    args = parser.parse_args()
    with bench_ledger_url(args.db, "bench-ledger-") as url:
        engine = make_engine(url)
        sides = {"row by row": RowByRowLedger(engine).create(), "in the INSERT": Ledger(engine).create()}
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        fresh: dict[str, list[float]] = {name: [] for name in sides}
        print(f"{args.rows} spilled notifications claimed back and completed, batches of {args.batch}, {args.db}")
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            states = {}
            for name in order:
                tag = f"r{r}-{name.replace(' ', '')}"
                claim_us, complete_us, states[name] = one_round(sides[name], tag, args.rows, args.batch, spill=True)
                figures[name].append((claim_us, complete_us))
                fresh[name].append(one_round(sides[name], tag + "-fresh", args.rows, args.batch, spill=False)[0])
            same = len(set(map(tuple, states.values()))) == 1
            print(
                f"round {r + 1}: "
                + "; ".join(
                    f"{name}: claim {figures[name][-1][0]:,.0f} µs/row, complete {figures[name][-1][1]:,.0f}"
                    for name in sides
                )
                + f"; same claims: {same}",
                flush=True,
            )
        for name in sides:
            claims = [c for c, _ in figures[name]]
            completes = [c for _, c in figures[name]]
            print(
                f"{name}: spilled claim median {statistics.median(claims):,.0f} µs/row "
                f"({min(claims):,.0f}–{max(claims):,.0f}), fresh claim {statistics.median(fresh[name]):,.0f}, "
                f"complete {statistics.median(completes):,.0f}"
            )
        engine.dispose()


if __name__ == "__main__":
    main()
