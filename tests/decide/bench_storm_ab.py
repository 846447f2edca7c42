"""Benchmark: this checkout's worker against another's on the timer-heavy storm, side by side on one broker.

Run: PYTHONPATH=. .venv/bin/python -m tests.decide.bench_storm_ab --baseline DIR [--events 20000] [--repeat 2]

The workload is ``tests.decide.bench_decide_agent.storm`` (10 alerts per session, 1 ms apart, all
within group_wait: every event schedules its group's flush timer), the one the issue-17 profile
measured 0.99 ``schedule_timer`` effects per event on. Each worker runs ``opsloop bench``'s L4 rung
(:func:`streams.devtools.bench.workers.run_l4`: pre-load, drain, settle, idle), the two alternating
which goes first; the report is ``opsloop bench``'s. ``--idle`` lengthens the idle window after
settling. Prints figures; asserts none.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from streams.devtools.bench import workers
from streams.devtools.bench.report import report
from streams.devtools.broker import LocalKafka
from tests.decide.bench_decide_agent import storm

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout (its worker is run from it)")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of the idle window after settling")
    args = parser.parse_args()
    roots = {"this checkout": ROOT, f"baseline {args.baseline}": args.baseline.resolve()}
    idle = workers.Rig.idle_cpu
    workers.Rig.idle_cpu = lambda self, seconds=args.idle: idle(self, args.idle)  # type: ignore[method-assign]
    work = Path(tempfile.mkdtemp(prefix="opsloop-storm-ab-"))
    broker = LocalKafka(work / "kafka").start()
    saved = dict(os.environ)
    levels = []
    try:
        batch = storm(args.events, 1_700_000_000_000)
        for i in range(args.repeat):
            order = list(roots.items()) if i % 2 == 0 else list(roots.items())[::-1]
            for name, root in order:
                print(f"run {i + 1} of {args.repeat}: {name}", file=sys.stderr, flush=True)
                levels += workers.run_l4(name, broker.bootstrap, work, batch, 600, False, broker, root=root)
                os.environ.clear()
                os.environ.update(saved)
        report(levels, args.events)
    finally:
        broker.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
