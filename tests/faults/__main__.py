"""The fault harness in one command: ``.venv/bin/python -m tests.faults [--scenario NAME ...]``.

Starts what the scenarios stop (a Kafka broker and a PostgreSQL cluster of its own, so
the broker and database scenarios can stop and restart them), the scripted HTTP
receivers, runs the fault-free baseline (the oracle), then each scenario in turn, and
prints the report table. Exit status 1 when any scenario breaks an invariant
(``harness.check``) or does not settle; every scenario runs either way.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from tests.faults import harness, scenarios


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(scenarios.SCENARIOS),
        help="run this scenario (repeatable); default: the full set " + ", ".join(scenarios.FULL),
    )
    parser.add_argument(
        "--sessions",
        type=int,
        default=16,
        help="alert sessions of the replay traffic in the fixed input (16: 126 events with the 2 escalating ones)",
    )
    parser.add_argument(
        "--processing-guarantee",
        choices=("exactly_once",),
        help="the exactly-once experiment: workers run with faust's processing_guarantee (tests/faults/eos_worker.py)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (workers' logs) and say where")
    return parser.parse_args(argv)


def base_env(bootstrap: str) -> dict[str, str]:
    """What tests/conftest.py's ``opsloop_env`` sets, minus what each run sets for itself."""
    from streams.devtools.processes import FAST_GROUP_ENV

    return {
        **FAST_GROUP_ENV,
        "KAFKA_BOOTSTRAP": bootstrap,
        "OPSLOOP_WEB_ENABLED": "false",
        "OPSLOOP_LOG_LEVEL": "info",
    }


def main(argv: list[str] | None = None) -> int:
    from streams.devtools.broker import LocalKafka
    from tests.sinks.fakes import FakeServices
    from tests.support.postgres import LocalPostgres

    args = parse(sys.argv[1:] if argv is None else argv)
    # aiokafka's producer logs each retry of a send to a partition whose leader moved (after topic
    # creation, after the broker restart) as an error; the report is what this command prints.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    names = args.scenario or list(scenarios.FULL)
    work = Path(tempfile.mkdtemp(prefix="opsloop-faults-"))
    started = time.monotonic()
    print(f"fault harness: {', '.join(names)} ({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; work {work})")
    broker = LocalKafka(work / "kafka").start()
    postgres = LocalPostgres().start()
    fakes = FakeServices().start()
    env = base_env(broker.bootstrap)
    if args.processing_guarantee:
        from tests.faults.eos_worker import GUARANTEE_ENV

        env[GUARANTEE_ENV] = args.processing_guarantee
    os.environ.update(env)
    crashed: list[str] = []
    try:
        bench = scenarios.Bench(
            env=env,
            tmp=work,
            fakes=fakes,
            ledger_url=lambda: harness.schema_url(postgres.url),
            events=harness.fixed_input(sessions=args.sessions, cycles=1, repeats=3),
            broker=broker,
            postgres=postgres,
        )
        scenarios.baseline(bench)
        for name in names:
            before = len(harness.REPORTS)
            try:
                rep = scenarios.SCENARIOS[name](bench)
                harness.check(rep)
            except AssertionError as exc:
                problem = str(exc).splitlines()[0]
                if len(harness.REPORTS) > before:
                    if problem not in "; ".join(harness.REPORTS[-1].failures):
                        harness.REPORTS[-1].failures.append(problem)
                else:
                    crashed.append(f"{name}: {problem}")
            except Exception:  # noqa: BLE001 - a scenario that cannot run is reported, the next one still runs
                crashed.append(f"{name}: {traceback.format_exc(limit=3)}")
    finally:
        fakes.stop()
        postgres.stop()
        broker.close()
    print()
    for line in harness.summary(harness.REPORTS):
        print(line)
    for line in crashed:
        print(f"DID NOT FINISH: {line}")
    failed = crashed or any(rep.failures for rep in harness.REPORTS)
    print(f"\n{'FAILED' if failed else 'passed'}: {len(names)} scenario(s) in {time.monotonic() - started:.0f}s")
    if not args.keep and not failed:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"logs: {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
