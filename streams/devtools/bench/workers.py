"""L3, L4, L5, fixed rate and flat cost: rungs whose work runs in child processes, timed on their output.

Each rung gets a fresh topic prefix and consumer group on the one broker. A rung's
window is read from its output records' timestamps (first to last), so the child's
start-up is not counted; CPU and memory of each child, of the broker and of this
process (which reads the output) are taken over that window.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.devtools import childproc
from streams.devtools.bench.measure import Bar, CpuWindow, latency_summary
from streams.devtools.bench.report import BUSY_KEY, IDLE_KEY, Level, flat_name
from streams.devtools.bench.workload import T0, PacedFeed, clock_ticks, feed_of, preload, storm_events, zipf_events
from streams.devtools.broker import LocalKafka
from streams.devtools.processes import FAST_GROUP_ENV, WorkerProcess

IDLE_WINDOW_S = 10.0


@dataclass
class Seen:
    """What :func:`watch` read: the matching records' count, first and last timestamps (ms), each matched id's
    record timestamp (ms), and latencies (ms) where the caller computed them."""

    count: int = 0
    first_ts: int = 0
    last_ts: int = 0
    at: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return (self.last_ts - self.first_ts) / 1000


async def watch(
    settings: Any,
    topic: str,
    expected: int,
    cpu: CpuWindow,
    progress: Bar,
    timeout: float,
    *,
    key_of: Callable[[bytes], str | None] | None = None,
    alive: Callable[[], bool] | None = None,
    start: Mapping[int, int] | None = None,
) -> Seen:
    """Read ``topic`` (physical name) from the start until ``expected`` matching records were seen.

    With ``key_of`` a record matches when it returns an id not seen before (e.g. a decision's event id among
    the rung's), and its record timestamp is kept by id (``Seen.at``); without, every record matches. The
    CPU window starts at the first match, unless the caller started it already (the workers were running
    while the input was appended, and began on it before this reader saw anything). ``start`` (partition -> offset, from :func:`end_offsets` before the
    input was sent) skips what was there before, so a reader behind a long topic does not open the CPU window
    after the work is done.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    if start is None:
        consumer = AIOKafkaConsumer(
            topic,
            **settings.kafka_client_config(),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
    else:
        consumer = AIOKafkaConsumer(**settings.kafka_client_config(), group_id=None, enable_auto_commit=False)
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in start]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp.partition])
    seen, ids = Seen(), set()
    deadline = time.monotonic() + timeout
    try:
        while seen.count < expected and time.monotonic() < deadline:
            if alive is not None and not alive():
                break  # the process doing the work is gone: no point waiting out the timeout
            batches = await consumer.getmany(timeout_ms=500, max_records=5_000)
            for records in batches.values():
                for msg in records:
                    if key_of is not None:
                        key = key_of(msg.value)
                        if key is None or key in ids:
                            continue
                        ids.add(key)
                        seen.at[key] = msg.timestamp
                    if seen.count == 0:
                        seen.first_ts = msg.timestamp
                        if not cpu.started:  # else opened by the caller before the input was sent
                            cpu.start()
                    seen.count += 1
                    seen.last_ts = max(seen.last_ts, msg.timestamp)
            progress.update(min(seen.count, expected))
    finally:
        progress.done()
        await consumer.stop()
    cpu.stop()
    return seen


async def end_offsets(settings: Any, topic: str, partitions: int) -> dict[int, int]:
    """Each partition's end offset of ``topic`` now (for :func:`watch`'s ``start``)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**settings.kafka_client_config(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: int(end) for tp, end in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


def decision_of(ids: set[str] | Mapping[str, int]) -> Callable[[bytes], str | None]:
    """A ``key_of`` for ``decisions``: the event id of a decision record about one of ``ids``."""
    from streams.kafka.codec import default_codec

    codec = default_codec()

    def key_of(value: bytes) -> str | None:
        event_id = codec.decode(value).get("event_id")
        return event_id if event_id in ids else None

    return key_of


class CheckoutWorker(WorkerProcess):
    """``opsloop worker`` run from another checkout (its directory first on the path): a baseline."""

    def __init__(self, env: dict[str, str], log_path: Path, root: Path) -> None:
        super().__init__({**env, "PYTHONPATH": str(root)}, log_path)
        self.root = root

    def start(self) -> CheckoutWorker:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = childproc.spawn(
                [sys.executable, "-m", "streams.cli.main", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
            )
        return self


class Rig:
    """A fresh topic prefix and app id on the broker, its topics created, and the workers run on it."""

    def __init__(
        self,
        bootstrap: str,
        work: Path,
        broker: LocalKafka | None,
        root: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        from streams.kafka.admin import apply
        from streams.kafka.catalogue import load_catalogue
        from streams.settings import Settings

        self.tag = uuid.uuid4().hex[:6]
        self.work, self.broker, self.root = work / self.tag, broker, root
        self.env = {
            **FAST_GROUP_ENV,
            "KAFKA_BOOTSTRAP": bootstrap,
            "OPSLOOP_TOPIC_PREFIX": f"bench{self.tag}.",
            "OPSLOOP_APP_ID": f"opsloop-bench{self.tag}",
            "OPSLOOP_WEB_ENABLED": "false",
            "OPSLOOP_DATA_DIR": str(self.work / "data"),
            "OPSLOOP_LOG_LEVEL": "warning",
            "OPSLOOP_TIMER_CLOCK": "event",
            "OPSLOOP_SINK_SINGLE_NODE": "true",  # one host, SQLite ledger in the throwaway data dir
            **(extra_env or {}),
        }
        self._saved_env = dict(os.environ)
        os.environ.update(self.env)  # Settings read the environment; put back by close(), so no rung leaks its own
        self.settings = Settings.from_env()
        asyncio.run(apply(self.settings, load_catalogue(self.settings.topics_file)))
        self.workers: list[WorkerProcess] = []
        self.extra_pids: dict[str, int] = {}  # other servers the rung uses (PostgreSQL), read with their children

    def start_workers(self, count: int = 1) -> None:
        for i in range(count):
            log_path = self.work / f"worker-{len(self.workers)}.log"
            w = CheckoutWorker(self.env, log_path, self.root) if self.root else WorkerProcess(self.env, log_path)
            self.workers.append(w.start())
            if count > 1 and i == 0:
                time.sleep(0.5)

    def cpu(self) -> CpuWindow:
        pids = {}
        for i, w in enumerate(self.workers):
            if w.proc is not None:
                pids["worker" if len(self.workers) == 1 else f"worker {i + 1}"] = w.proc.pid
        if self.broker is not None and self.broker.proc is not None:
            pids["broker"] = self.broker.proc.pid
        return CpuWindow({**pids, **self.extra_pids, "bench reader": os.getpid()}, trees=frozenset(self.extra_pids))

    def open_window(self) -> CpuWindow:
        """A CPU window opened now: for input appended to workers already running, which decide while it is
        appended. A window opened at the first decision read missed that (two workers read ~120 CPU-s per
        million events together where one read ~280; deploy/bench/BENCHMARKS.md)."""
        cpu = self.cpu()
        cpu.start()
        return cpu

    def logs(self) -> str:
        return "\n".join(w.log()[-2000:] for w in self.workers)

    def decision_ends(self) -> dict[int, int]:
        """The end offsets of ``decisions`` now: :meth:`decisions` reads from there (``start``)."""
        from streams.kafka.catalogue import by_name, load_catalogue

        partitions = by_name(load_catalogue(self.settings.topics_file))["decisions"].partitions
        return asyncio.run(end_offsets(self.settings, self.settings.topic_prefix + "decisions", partitions))

    def decisions(
        self,
        ids: set[str] | Mapping[str, int],
        timeout: float,
        progress: bool,
        start: Mapping[int, int] | None = None,
        cpu: CpuWindow | None = None,
    ) -> tuple[Seen, CpuWindow]:
        """Wait for a decision of every id; raises TimeoutError (with the workers' log tails) if they do not come.
        ``cpu``: a window the caller opened before appending the input to running workers (:meth:`open_window`);
        otherwise one opens at the first decision read (the workers started after the input was appended)."""
        cpu = cpu or self.cpu()
        began = time.monotonic()
        seen = asyncio.run(
            watch(
                self.settings,
                self.settings.topic_prefix + "decisions",
                len(ids),
                cpu,
                Bar(len(ids), enabled=progress),
                timeout,
                key_of=decision_of(ids),
                alive=lambda: all(w.alive for w in self.workers),
                start=start,
            )
        )
        if seen.count < len(ids):
            gone = [f"worker {i + 1} exited" for i, w in enumerate(self.workers) if not w.alive]
            raise TimeoutError(
                f"decided {seen.count} of {len(ids)} events in {time.monotonic() - began:.0f}s"
                f"{' (' + ', '.join(gone) + ')' if gone else ''}; logs:\n{self.logs()}"
            )
        return seen, cpu

    def settle(self, timeout: float) -> float:
        """Seconds until the worker group's commits reached the end of the events topics and of ``outbox``, and
        nothing waits in the sinks' spill: the sinks work through the outbox after the last decision, and a
        destination past its backlog spills effects whose offsets are committed before they are delivered
        (README, "Sinks"), so a worker is not done at its last decision nor at its last commit.

        Caught up must also hold for two of the ticker's periods: timers that came due (a storm's group
        notices, once event time passed their group_wait) are appended by the ticker's next tick, and a
        lag of zero seen just before it is not settled (FLAT's 1k worker was then measured "idle" while
        it delivered its storm's notices: 28.7 % of a core). NaN if it did not settle within ``timeout``."""
        start = time.monotonic()
        left, last_moved = asyncio.run(commit_lag(self.settings, timeout, quiet_s=2 * self.settings.timers.tick_s))
        if left:
            print(f"opsloop bench: the worker did not settle in {timeout:.0f}s: {left}", file=sys.stderr)
            return math.nan
        waiting = spill_waiting(self.settings)
        if not waiting:
            return last_moved - start  # not the quiet period that confirmed it
        while waiting and time.monotonic() - start < timeout:
            time.sleep(0.5)
            waiting = spill_waiting(self.settings)
        if waiting:
            print(
                f"opsloop bench: {waiting} effects still wait in the sinks' spill after {timeout:.0f}s", file=sys.stderr
            )
            return math.nan
        return time.monotonic() - start

    def idle_cpu(self, seconds: float = IDLE_WINDOW_S) -> float:
        """The first worker's CPU over ``seconds`` with no input, in % of one core."""
        cpu = self.cpu()
        cpu.start()
        time.sleep(seconds)
        cpu.stop()
        name = next(iter(cpu.pids))
        return 100.0 * cpu.used.get(name, 0.0) / seconds

    def close(self) -> None:
        for i, w in enumerate(self.workers):
            if w.proc is not None and not w.alive:  # it died during the rung: keep its log past the work dir
                kept = Path(tempfile.gettempdir()) / f"opsloop-bench-{self.tag}-worker-{i + 1}.log"
                shutil.copyfile(w.log_path, kept)
                print(
                    f"opsloop bench: worker {i + 1} exited with {w.proc.returncode}; its log: {kept}", file=sys.stderr
                )
            w.stop()
        os.environ.clear()
        os.environ.update(self._saved_env)


def spill_waiting(settings: Any) -> int:
    """Effects waiting in the sinks' spill now (the delivery ledger's ``spilled`` rows; 0 before it exists)."""
    import sqlalchemy as sa

    from streams.db import make_engine

    # by name (agents/sinks/ledger.py's table and status): streams/ does not import agents/
    ledger = sa.table("delivery_ledger", sa.column("status"))
    engine = make_engine(settings.ledger_url())
    try:
        with engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).where(ledger.c.status == "spilled")).scalar_one()
            return int(count)
    except sa.exc.DBAPIError:  # no ledger table yet: nothing spilled
        return 0
    finally:
        engine.dispose()


async def commit_lag(settings: Any, timeout: float, quiet_s: float = 0.0) -> tuple[dict[str, int], float]:
    """Poll until the group's committed offsets reach the end offsets of the events topics and ``outbox``
    (:func:`streams.kafka.admin.group_lag`, the test suite's quiescence too) and no end offset moved for ``quiet_s``; returns what is still behind
    at ``timeout`` (empty: settled) and when (``time.monotonic()``) it was first seen caught up for good."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    from streams.kafka.admin import group_lag, partitions_of
    from streams.kafka.catalogue import EVENT_TOPICS

    config = settings.kafka_client_config()
    admin = AIOKafkaAdminClient(**config)
    consumer = AIOKafkaConsumer(**config, enable_auto_commit=False, group_id=None)
    await admin.start()
    await consumer.start()
    deadline, lag = time.monotonic() + timeout, {"?": 1}
    caught_up: float | None = None
    last_ends: dict[Any, int] | None = None
    try:
        tps = await partitions_of(consumer, settings, (*EVENT_TOPICS, "outbox"))
        while time.monotonic() < deadline:
            try:
                lag, ends = await group_lag(admin, consumer, settings.app_id, tps)
            except KafkaError as exc:  # the group's coordinator not elected yet (a broker's first group): ask again
                if not exc.retriable:
                    raise
                lag, caught_up = {f"group coordinator: {type(exc).__name__}": 1}, None
                await asyncio.sleep(0.5)
                continue
            now = time.monotonic()
            if lag:
                caught_up = None
            elif caught_up is None or ends != last_ends:
                caught_up = now  # caught up, or caught up again after something new was appended
            last_ends = ends
            if caught_up is not None and now - caught_up >= quiet_s:
                break
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()
        await admin.close()
    return lag, time.monotonic() if caught_up is None else caught_up


def level_of(name: str, seen: Seen, cpu: CpuWindow, **extra: float) -> Level:
    return Level(
        name,
        seen.count,
        seen.seconds,
        cpu.used,
        cpu.rss,
        latency=latency_summary(seen.latencies) if seen.latencies else {},
        extra={BUSY_KEY: cpu.machine, **extra},
    )


def run_l3(bootstrap: str, settings: Any, work: Path, n: int, timeout: float, progress: bool, broker: Any) -> Level:
    """L3: the faust passthrough child on the pre-loaded topic; timed on its output topic."""
    from streams.devtools.bench.transport import create_topics, event_partitions

    tag = uuid.uuid4().hex[:6]
    sink = settings.topic_prefix + "bench.l3"
    asyncio.run(create_topics(settings, [sink], event_partitions(settings)))
    env = {
        **os.environ,
        "BENCH_BOOTSTRAP": bootstrap,
        "BENCH_APP_ID": f"bench-l3-{tag}",
        "BENCH_SOURCE": settings.topic_prefix + "events.telemetry",
        "BENCH_SINK": sink,
        "BENCH_DATA_DIR": str(work / f"l3-{tag}"),
    }
    log_path = work / f"l3-{tag}.log"
    with open(log_path, "ab") as log:
        proc = childproc.spawn(
            [sys.executable, "-m", "streams.devtools.bench.faust_passthrough", "worker", "-l", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        pids = {"faust": proc.pid, "bench reader": os.getpid()}
        if broker is not None and broker.proc is not None:
            pids["broker"] = broker.proc.pid
        cpu = CpuWindow(pids)
        seen = asyncio.run(watch(settings, sink, n, cpu, Bar(n, enabled=progress), timeout))
        if seen.count < n:
            raise TimeoutError(f"L3 forwarded {seen.count} of {n} in {timeout:.0f}s:\n{log_path.read_text()[-3000:]}")
        return level_of("L3 faust passthrough agent", seen, cpu)
    finally:
        childproc.stop(proc, 15)


async def wait_members(settings: Any, count: int, timeout: float) -> None:
    """Until the worker group is Stable with ``count`` members (so a timed drain has no rebalance in it)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**settings.kafka_client_config())
    await admin.start()
    deadline, state = time.monotonic() + timeout, ("", 0)
    try:
        while time.monotonic() < deadline:
            for response in await admin.describe_consumer_groups([settings.app_id]):
                for g in response.groups:
                    state = (g[2], len(g[5]))
            if state == ("Stable", count):
                return
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
    raise TimeoutError(f"the worker group did not become Stable with {count} members in {timeout:.0f}s: {state}")


def run_l4(
    name: str,
    bootstrap: str,
    work: Path,
    batch: Sequence[dict[str, Any]],
    timeout: float,
    progress: bool,
    broker: LocalKafka | None,
    *,
    root: Path | None = None,
    rates: Sequence[float] = (),
    rate_seconds: float = 20.0,
    rate_of: float | None = None,
) -> list[Level]:
    """L4: pre-load, start one worker, time the drain; then the idle CPU; then each fixed rate (a fraction of the
    drain rate, or of ``rate_of``: the baseline is offered the rates L4 was, side by side) for ``rate_seconds``,
    with event → decision latency."""
    rig = Rig(bootstrap, work, broker, root)
    try:
        ids = asyncio.run(preload(rig.settings, batch, Bar(len(batch), enabled=progress)))
        print(f"opsloop bench: {name}: one worker, timed from its first decision", file=sys.stderr)
        rig.start_workers(1)
        seen, cpu = rig.decisions(set(ids), timeout, progress)
        after = rig.cpu()  # the sinks' work behind the last decision is the worker's too
        after.start()
        settled = rig.settle(min(timeout, 180.0))
        after.stop()
        worker = next(iter(after.pids))
        through = 1e6 * (cpu.used.get(worker, 0.0) + after.used.get(worker, 0.0)) / len(batch)
        idle = rig.idle_cpu()
        extra = {
            "outbox settled after (s)": settled,
            "worker CPU-s per million events to settled": through,
            IDLE_KEY: idle,
        }
        levels = [level_of(name, seen, cpu, **extra)]
        drain_rate = levels[0].rate if rate_of is None else rate_of
        suffix = "" if root is None else "b"
        t0 = T0 + 10 * len(batch) + 10  # event time goes on where the drained batch stopped (timers run on it)
        for i, fraction in enumerate(rates):
            rate = max(1.0, drain_rate * fraction)
            count = max(1, int(rate * rate_seconds))
            events = zipf_events(count, seed=18 + i, t0=t0)
            t0 += 10 * count + 10
            print(
                f"opsloop bench: fixed rate {rate:,.0f}/s ({fraction:.0%} of the L4 drain) for {rate_seconds:.0f} s",
                file=sys.stderr,
            )
            levels.append(
                fixed_rate(
                    rig, f"R{round(fraction * 100)}{suffix} fixed {fraction:.0%} of L4", events, rate, timeout, progress
                )
            )
            rig.settle(min(timeout, 180.0))  # the next rate starts on an idle worker
        return levels
    finally:
        rig.close()


def fixed_rate(
    rig: Rig, name: str, events: Sequence[dict[str, Any]], rate: float, timeout: float, progress: bool
) -> Level:
    """Append at ``rate`` while reading the decisions; latency = decision record time - input record time."""

    feed = feed_of(rig.settings, events)
    ids = {event_id for event_id, *_ in feed}
    cpu = rig.cpu()
    # The feed runs in a process of its own (PacedFeed); this one reads the decisions beside it.
    feeder = PacedFeed(rig.settings, feed, rate)
    seen = asyncio.run(
        watch(
            rig.settings,
            rig.settings.topic_prefix + "decisions",
            len(feed),
            cpu,
            Bar(len(feed), enabled=progress),
            timeout + len(feed) / rate,
            key_of=decision_of(ids),
        )
    )
    if seen.count < len(feed):
        raise TimeoutError(f"{name}: decided {seen.count} of {len(feed)}; logs:\n{rig.logs()}")
    sent = feeder.sent(timeout)
    seen.latencies = [float(at - sent[key]) for key, at in seen.at.items()]
    level = level_of(name, seen, cpu)
    level.extra["offered /s"] = rate
    return level


def run_l5(
    bootstrap: str, work: Path, batch: Sequence[dict[str, Any]], timeout: float, progress: bool, broker: Any
) -> Level:
    """L5: two workers in one group, Stable before the events are appended (no rebalance inside the window)."""
    rig = Rig(bootstrap, work, broker)
    try:
        print("opsloop bench: L5 two workers: waiting for both to join the group", file=sys.stderr)
        rig.start_workers(2)
        asyncio.run(wait_members(rig.settings, 2, timeout=min(timeout, 120.0)))
        # Appending is several times faster than the two workers drain, so the window is their drain.
        window = rig.open_window()
        ids = asyncio.run(preload(rig.settings, batch, Bar(len(batch), enabled=progress)))
        seen, cpu = rig.decisions(set(ids), timeout, progress, cpu=window)
        return level_of("L5 two opsloop workers", seen, cpu)
    finally:
        rig.close()


STORM_SETTLE_MS = 60_000  # past the storm's group_wait (30 s in runbooks/routing.yaml), well short of its escalations


FLAT_ROUNDS = 5  # timed windows per storm size, interleaved (1k, 100k, then 100k, 1k, ...)
WINDOW_EVENT_MS = 25_000  # event time between one round's window and the next (a window spans 20 s of it)


def run_flat(
    bootstrap: str,
    work: Path,
    batch: Sequence[dict[str, Any]],
    storms: Sequence[int],
    timeout: float,
    progress: bool,
    broker: Any,
    rounds: int = FLAT_ROUNDS,
) -> list[Level]:
    """Flat cost: one worker per storm size, each with ``storm`` distinct firing alerts drained and settled first
    (their group notices fired and delivered) and its idle CPU after that; then the usual workload on top of them,
    timed, in ``rounds`` rounds of one window per worker, the order alternating from round to round. The per-event
    CPU should not grow with the alerts already firing.

    Why interleaved: the figure of one window moves 20-30 % between runs on a shared machine, more than the
    difference looked for; windows of both workers minutes apart compared the machine's noise. Side by side,
    round by round, each ratio is taken under the same conditions (``report.flat_lines``). The worker not timed
    sits idle (its ticker only) and is not counted.
    """
    rigs: list[Rig] = []  # closed in the finally, a rig whose storm failed too
    settled: list[tuple[int, Rig, int, dict[str, float]]] = []
    levels: list[Level] = []
    try:
        for storm in storms:
            rigs.append(Rig(bootstrap, work, broker))
            settled.append((storm, rigs[-1], *_storm_settled(rigs[-1], storm, timeout, progress)))
        for r in range(rounds):
            for storm, rig, after, extra in settled if r % 2 == 0 else settled[::-1]:
                # The workload 10x denser in event time (20 s for 20,000 events), each round later than the last
                # and well before the storm's first escalation steps (5 min after its notices): what is timed is the
                # new events' cost. Fresh ids per round: a repeated id is a duplicate, decided the cheap way.
                shifted = [
                    {
                        **ev,
                        "event_id": f"{ev['event_id']}-w{r}",
                        "occurred_at": after + 1_000 + r * WINDOW_EVENT_MS + (ev["occurred_at"] - T0) // 10,
                    }
                    for ev in batch
                ]
                start = rig.decision_ends()  # the reader skips what came before: it keeps up with the window
                window = rig.open_window()
                ids = asyncio.run(preload(rig.settings, shifted, Bar(len(batch), enabled=progress)))
                seen, cpu = rig.decisions(set(ids), timeout, progress, start=start, cpu=window)
                levels.append(level_of(flat_name(storm), seen, cpu, **extra))
                print(
                    f"opsloop bench: flat cost, round {r + 1}, {storm:,} firing: {seen.count:,} events, worker "
                    f"{levels[-1].cpu_per_million().get('worker', 0.0):,.0f} CPU-s per million "
                    f"(ended {time.strftime('%H:%M:%S')})",
                    file=sys.stderr,
                )
        return levels
    finally:
        for rig in reversed(rigs):  # each puts back the environment it found
            rig.close()


def _storm_settled(rig: Rig, storm: int, timeout: float, progress: bool) -> tuple[int, dict[str, float]]:
    """The storm pre-loaded, decided, its group notices fired and delivered, then the idle CPU 10 s on: the event
    time after it (where the timed windows start) and the figures of it for the report."""
    print(f"opsloop bench: flat cost: {storm:,} firing alerts first", file=sys.stderr)
    storm_ids = asyncio.run(preload(rig.settings, storm_events(storm), Bar(storm, enabled=progress)))
    rig.start_workers(1)
    storm_seen, _ = rig.decisions(set(storm_ids), timeout, progress)
    # Event time past the storm's group waits on every partition: its notices fire now, not in the window.
    after = T0 + storm + STORM_SETTLE_MS
    tick_ids = asyncio.run(preload(rig.settings, clock_ticks(after), Bar(0, enabled=False)))
    rig.decisions(set(tick_ids), timeout, False)
    settled = rig.settle(min(timeout, 300.0))
    return after, {
        "storm decided /s": storm_seen.count / max(storm_seen.seconds, 1e-3),
        "outbox settled after storm (s)": settled,
        IDLE_KEY: rig.idle_cpu(),
    }
