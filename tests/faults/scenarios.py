"""The fault scenarios of issue 16, each a function of one :class:`Bench` returning its report.

Every scenario runs the bench's fixed input through real workers under its own topic
prefix, consumer group and ledger schema, injects its faults *mid-stream* (while the input
is being decided and its notices delivered, not at a settled point), lets the run settle
and compares it with the fault-free baseline (``harness.check``). ``python -m tests.faults``
runs them (``--scenario NAME``); CI runs ``reduced`` (``tests/faults/test_reduced.py``).

Mid-stream means: the input goes in in parts, and a fault is injected as soon as the
first event of the part just produced is decided, so decide batches, state writes and
deliveries are in flight when it lands. Slack is scripted to hang or to accept and drop a
request around the kills, so a kill can land while a delivery's outcome is unknown (not
PagerDuty, whose repeats its dedup_key absorbs but the harness would count). A scripted
answer no request reached is taken back from the fault count and noted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults import harness
from tests.faults.poison import all_poison, classifier_poison
from tests.sinks.fakes import Answer, FakeServices

# How long a broker or database outage lasts: the fault's length, not a wait for readiness.
OUTAGE_S = 10.0


@dataclass
class Bench:
    """What every scenario shares: the services, the fixed input and the baseline's oracle."""

    env: dict[str, str]  # the base environment of every run (broker, group timing, logs)
    tmp: Path
    fakes: FakeServices
    ledger_url: Callable[[], str]  # a fresh PostgreSQL schema per run
    events: list[dict[str, Any]]
    broker: Any = None  # LocalKafka the harness owns (the broker scenario stops it); None: a shared one
    postgres: Any = None  # tests.support.postgres.LocalPostgres the harness owns (the database scenario)
    oracle: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def run(self, name: str, **kwargs: Any) -> harness.Run:
        return harness.Run(name, self.env, self.tmp, self.fakes, self.ledger_url(), **kwargs)

    def parts(self, n: int) -> list[list[dict[str, Any]]]:
        """The input in ``n`` consecutive parts (event-time order is kept)."""
        size = -(-len(self.events) // n)
        return [self.events[i : i + size] for i in range(0, len(self.events), size)]


def baseline(bench: Bench) -> harness.Report:
    """The fault-free run: its decided notify effects become the bench's oracle."""
    bench.oracle, rep = harness.baseline(bench.env, bench.tmp, bench.fakes, bench.ledger_url(), bench.events)
    assert bench.oracle, "the input decides no notification: the oracle would be empty"
    return rep


def _finish(run: harness.Run, bench: Bench, poison: int = 0, timeout: float = 240.0) -> harness.Report:
    try:
        obs = run.settle(bench.events, poison=poison, timeout=timeout)
    finally:
        run.stop_all()
    return run.report(bench.events, obs, bench.oracle, poison=poison)


def _fed(run: harness.Run, part: list[dict[str, Any]], decided: int) -> int:
    """Produce ``part``; return once its first events are being decided (the moment to strike)."""
    run.produce(part)
    return run.wait_decisions(decided + 1)


def reduced(bench: Bench) -> harness.Report:
    """CI's scenario: one SIGKILL once the first half settled, a 429 and a 5xx, three poison records."""
    run = bench.run("reduced: kill + poison")
    run.script("pagerduty", "pagerduty-primary", Answer(429, "", {"Retry-After": "1"}), fault="receiver 429")
    run.script("pagerduty", "pagerduty-primary", Answer(503, "busy"), fault="receiver 5xx")
    first, second = bench.parts(2)
    worker = run.start_worker()
    try:
        run.produce(first)
        run.settle(first)
        run.kill(worker)
        run.start_worker()
        poison = all_poison()
        run.poison(poison)
        run.produce(second)
    except BaseException:
        run.stop_all()
        raise
    return _finish(run, bench, poison=len(poison))


def kill3(bench: Bench) -> harness.Report:
    """A worker SIGKILLed three times mid-stream, a Slack hang and an accept-then-drop in flight."""
    run = bench.run("SIGKILL ×3 mid-stream")
    run.script("slack", "infra-slack", Answer(hang_s=30), fault="receiver hang", ambiguous=True)
    run.script("slack", "infra-slack", Answer(drop=True), fault="receiver accept-then-drop", ambiguous=True)
    parts = bench.parts(4)
    worker, decided = run.start_worker(), 0
    try:
        for part in parts[:3]:
            decided = _fed(run, part, decided)
            run.kill(worker)
            worker = run.start_worker()
        run.produce(parts[3])
    except BaseException:
        run.stop_all()
        raise
    return _finish(run, bench)


def join_leave(bench: Bench) -> harness.Report:
    """A second worker joins mid-stream (a rebalance) and leaves again (SIGTERM: another one)."""
    run = bench.run("second worker joins and leaves")
    run.script("slack", "infra-slack", Answer(drop=True), fault="receiver accept-then-drop", ambiguous=True)
    first, second, third = bench.parts(3)
    run.start_worker()
    try:
        decided = _fed(run, first, 0)
        joining = run.start_worker()
        run.fault("worker joins")
        decided = _fed(run, second, decided)
        wait_members(run, 2)
        joining.stop()
        run.fault("worker leaves")
        run.produce(third)
    except BaseException:
        run.stop_all()
        raise
    return _finish(run, bench)


def broker_restart(bench: Bench) -> harness.Report:
    """The broker stopped (SIGTERM) mid-stream for ``OUTAGE_S`` and started again on the same ports and logs."""
    assert bench.broker is not None, "the broker scenario needs a broker of its own (python -m tests.faults)"
    run = bench.run("broker stopped and restarted")
    first, second = bench.parts(2)
    run.start_worker()
    try:
        _fed(run, first, 0)
        bench.broker.stop()
        run.fault("broker stopped", ambiguous=True)
        time.sleep(OUTAGE_S)  # the outage itself
        bench.broker.start()
        run.produce(second)
    except BaseException:
        run.stop_all()
        raise
    return _finish(run, bench, timeout=360.0)


def postgres_restart(bench: Bench) -> harness.Report:
    """PostgreSQL stopped mid-stream under the delivery ledger and the projector, then started again."""
    from tests.faults.projector import wait_projected

    assert bench.postgres is not None, "the database scenario needs a PostgreSQL of its own (python -m tests.faults)"
    run = bench.run("PostgreSQL stopped and restarted")
    first, second, third = bench.parts(3)
    run.start_worker()
    run.start_projector()
    try:
        _fed(run, first, 0)
        bench.postgres.pause()
        run.fault("PostgreSQL stopped", ambiguous=True)
        run.produce(second)  # decided while the ledger and the audit tables are down
        time.sleep(OUTAGE_S)  # the outage itself
        bench.postgres.resume()
        run.produce(third)
        obs = run.settle(bench.events, timeout=300.0)
        events = {e["event_id"] for e in bench.events} | obs.timer_events  # the projector folds events.timer too
        want = {"audit_events": len(events), "audit_effects": len(obs.effect_ids)}
        problems: list[str] = []
        try:
            wait_projected(run.ledger_url, want, run.projector)
        except AssertionError as exc:
            problems.append(str(exc).splitlines()[0])
    finally:
        run.stop_all()
    rep = run.report(bench.events, obs, bench.oracle)
    rep.failures.extend(problems)
    rep.notes.append(f"projector: audit rows {'as wanted' if not problems else 'short'} ({want})")
    return rep


def data_dir_deleted(bench: Bench) -> harness.Report:
    """A worker SIGKILLed mid-stream and its data directory deleted (a lost disk), twice."""
    run = bench.run("data dir deleted (kill -9)")
    run.script("slack", "infra-slack", Answer(hang_s=30), fault="receiver hang", ambiguous=True)
    parts = bench.parts(3)
    worker, decided = run.start_worker(), 0
    try:
        for part in parts[:2]:
            decided = _fed(run, part, decided)
            run.kill(worker)
            run.wipe_data_dir()
            worker = run.start_worker()
        run.produce(parts[2])
    except BaseException:
        run.stop_all()
        raise
    return _finish(run, bench)


def poison(bench: Bench) -> harness.Report:
    """Poison mid-stream: undecodable bytes, an unknown schema, impossible values, a classifier that raises;
    PagerDuty answering 429 with Retry-After and a 5xx."""
    run = bench.run("poison records", classifier_fault=True)
    run.script("pagerduty", "pagerduty-primary", Answer(429, "", {"Retry-After": "1"}), fault="receiver 429")
    run.script("pagerduty", "pagerduty-primary", Answer(500, "oops"), fault="receiver 5xx")
    first, second = bench.parts(2)
    records = all_poison()
    run.start_worker()
    try:
        run.produce(first)
        run.poison(records)
        run.produce([run.mark(e) for e in classifier_poison()])
        run.produce(second)
    except BaseException:
        run.stop_all()
        raise
    return _finish(run, bench, poison=len(records))


def wait_members(run: harness.Run, n: int, timeout: float = 90.0) -> None:
    """Until the worker group is stable with ``n`` members (the joining worker has its partitions)."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def members() -> tuple[str, int]:
        admin = AIOKafkaAdminClient(**run.settings.kafka_client_config())
        await admin.start()
        try:
            (response,) = await admin.describe_consumer_groups([run.settings.app_id])
            group = response.groups[0]
            return group[2], len(group[5])  # (error, id, state, protocol type, protocol, members, ...)
        finally:
            await admin.close()

    deadline = time.monotonic() + timeout
    state: tuple[str, int] = ("", 0)
    while time.monotonic() < deadline:
        state = asyncio.run(members())
        if state == ("Stable", n):
            return
        time.sleep(0.5)  # polling the group coordinator for a condition, with a deadline
    raise AssertionError(f"worker group not stable with {n} members after {timeout:.0f}s: {state}")


SCENARIOS: dict[str, Callable[[Bench], harness.Report]] = {
    "reduced": reduced,
    "kill3": kill3,
    "join-leave": join_leave,
    "broker": broker_restart,
    "postgres": postgres_restart,
    "data-dir": data_dir_deleted,
    "poison": poison,
}
FULL = ("kill3", "join-leave", "broker", "postgres", "data-dir", "poison")
