"""``opsloop bench``: events per second through one worker, beside a raw Kafka passthrough, in one run.

On one broker (a :class:`~streams.devtools.broker.LocalKafka` it starts, or
``KAFKA_BOOTSTRAP``), under a fresh topic prefix:

1. pre-load N real-alert events on ``events.telemetry``: the rules of the
   awesome-prometheus-alerts catalogue (``classifier.dataset``) rendered as events,
   sessions drawn Zipf-distributed over ~1,000 services (a few loud services, a long
   tail), a fixed seed;
2. **L1**: a raw aiokafka consumer → producer passthrough of the same encoded bytes to
   a ``bench.passthrough`` topic (no decode, no work): the ceiling the transport sets;
3. **L4**: one ``opsloop worker`` started on the pre-loaded topic: the drain is the time
   from its first decision to the last event's decision on ``decisions`` (the
   decision records' timestamps), so its start-up is not counted.

Printed: events/s of each, L4/L1, and CPU-seconds per million events of each process
(``/proc/<pid>/stat``, utime + stime, over the measured window). Loopback only, bounded
by ``--timeout``; the broker and worker are child processes that die with it.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.devtools.broker import LocalKafka
from streams.devtools.processes import FAST_GROUP_ENV, WorkerProcess
from streams.progress import Progress

CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_EVENTS = 2_000_000


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, in seconds (None: gone or not readable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class CpuWindow:
    """CPU used by some processes between :meth:`start` and :meth:`stop`."""

    pids: dict[str, int]
    begin: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self.begin = {name: cpu_seconds(pid) or 0.0 for name, pid in self.pids.items()}

    def stop(self) -> None:
        for name, pid in self.pids.items():
            now = cpu_seconds(pid)
            if now is not None:
                self.used[name] = now - self.begin[name]


@dataclass
class Level:
    name: str
    events: int
    seconds: float
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def zipf_events(
    n: int, *, services: int = 1_000, seed: int = 17, t0: int = 1_700_000_000_000, exponent: float = 1.1
) -> list[dict[str, Any]]:
    """N firing-alert events from the catalogue's rules, sessions Zipf-distributed over ``services``."""
    from classifier.dataset import load_rules, rule_to_event

    rng = random.Random(seed)
    rules = [r for r in load_rules() if r.severity in ("warning", "critical")]
    weights = [1.0 / (k**exponent) for k in range(1, services + 1)]
    names = [f"svc-{k:04d}" for k in range(services)]
    picks = rng.choices(range(services), weights=weights, k=n)
    events = []
    for i, s in enumerate(picks):
        rule = rules[(s * 7 + rng.randrange(3)) % len(rules)]  # a service fires a few alerts of its own
        ev = rule_to_event(
            rule, occurred_at=t0 + i * 10, instance=f"{names[s]}-{rng.randrange(3)}:9100", source="prometheus"
        )
        ev["labels"] = {**ev["labels"], "service": names[s]}
        ev["session_key"] = f"bench:{names[s]}:{rule.name}"
        events.append(ev)
    return events


async def preload(settings: Any, events: list[dict[str, Any]], progress: Progress) -> list[str]:
    """Append the events; returns their event ids."""
    from streams.kafka.producer import EventProducer

    ids: list[str] = []
    async with EventProducer(settings) as producer:
        for i in range(0, len(events), 5_000):
            done = await producer.send_many(events[i : i + 5_000])
            ids.extend(ev["event_id"] for ev, _ in done)
            progress.update(len(ids))
    progress.done()
    return ids


async def passthrough(settings: Any, n: int, timeout: float, progress: Progress) -> Level:
    """L1: consume the pre-loaded events' bytes and produce them, unchanged, to bench.passthrough."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    source = settings.topic_prefix + "events.telemetry"
    sink = settings.topic_prefix + "bench.passthrough"
    conf = settings.kafka_client_config()
    admin = AIOKafkaAdminClient(**conf)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(sink, num_partitions=settings_partitions(settings), replication_factor=1)])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        source,
        **conf,
        group_id=f"bench-l1-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(**conf, linger_ms=5, max_batch_size=256 * 1024)
    await consumer.start()
    await producer.start()
    cpu = CpuWindow({"passthrough (this process)": os.getpid()})
    moved, started = 0, None
    deadline = time.monotonic() + timeout
    try:
        while moved < n and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=2_000)
            if not batches:
                continue
            if started is None:
                started = time.perf_counter()
                cpu.start()
            acks = []
            for records in batches.values():
                for r in records:
                    acks.append(await producer.send(sink, r.value, key=r.key))
            await asyncio.gather(*acks)
            moved += len(acks)
            progress.update(min(moved, n))
    finally:
        progress.done()
        await consumer.stop()
        await producer.stop()
    cpu.stop()
    if moved < n:
        raise TimeoutError(f"L1 passthrough moved {moved} of {n} events in {timeout:.0f}s")
    return Level("L1 aiokafka passthrough", n, time.perf_counter() - (started or 0.0), cpu.used)


def settings_partitions(settings: Any) -> int:
    from streams.kafka.catalogue import load_catalogue

    return next(s.partitions for s in load_catalogue(settings.topics_file) if s.name == "events.telemetry")


async def drain(settings: Any, ids: set[str], timeout: float, cpu: CpuWindow, progress: Progress) -> Level:
    """Wait for every id's decision on ``decisions``; time from the first bench decision to the last."""
    from streams.kafka.reader import TopicReader

    seen: set[str] = set()
    first_ts = last_ts = None
    deadline = time.monotonic() + timeout
    async with TopicReader(settings, ["decisions"], from_beginning=True) as reader:
        consumer = reader._consumer
        while len(seen) < len(ids) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=5_000)
            for records in batches.values():
                for msg in records:
                    record = reader._decode(msg)
                    if record.value is None or record.value.get("event_id") not in ids:
                        continue
                    if first_ts is None:
                        first_ts = msg.timestamp
                        cpu.start()
                    seen.add(record.value["event_id"])
                    last_ts = max(last_ts or 0, msg.timestamp)
            progress.update(len(seen))
    progress.done()
    cpu.stop()
    if len(seen) < len(ids):
        raise TimeoutError(f"L4 worker decided {len(seen)} of {len(ids)} events in {timeout:.0f}s")
    seconds = ((last_ts or 0) - (first_ts or 0)) / 1000
    return Level("L4 one opsloop worker", len(ids), seconds, cpu.used)


def report(levels: list[Level], n: int, out: Any = sys.stdout) -> None:
    l1 = levels[0]
    print(f"\nopsloop bench: {n:,} events (Zipf sessions over ~1,000 services, catalogue alerts)", file=out)
    print(f"{'level':28} {'events/s':>10} {'seconds':>8}   CPU-s per million events", file=out)
    for level in levels:
        cpu = ", ".join(f"{name} {secs / level.events * 1e6:,.0f}" for name, secs in level.cpu.items())
        print(f"{level.name:28} {level.rate:10,.0f} {level.seconds:8.1f}   {cpu}", file=out)
    for level in levels[1:]:
        if l1.rate:
            print(
                f"{level.name.replace('one opsloop worker', '').strip() + ' / L1':28} {level.rate / l1.rate:10.3f}",
                file=out,
            )


class CheckoutWorker(WorkerProcess):
    """``opsloop worker`` run from another checkout (its directory first on the path): a baseline."""

    def __init__(self, env: dict[str, str], log_path: Path, root: Path) -> None:
        super().__init__({**env, "PYTHONPATH": str(root)}, log_path)
        self.root = root

    def start(self) -> CheckoutWorker:
        from streams.devtools import childproc

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


def run_l4(
    name: str,
    bootstrap: str,
    work: Path,
    batch: list[dict[str, Any]],
    timeout: float,
    progress: bool,
    broker: LocalKafka | None,
    root: Path | None = None,
) -> Level:
    """Pre-load the events under a fresh prefix, start one worker on them, time the drain."""
    from streams.kafka.admin import apply
    from streams.kafka.catalogue import load_catalogue
    from streams.settings import Settings

    tag = uuid.uuid4().hex[:6]
    env = {
        **FAST_GROUP_ENV,
        "KAFKA_BOOTSTRAP": bootstrap,
        "OPSLOOP_TOPIC_PREFIX": f"bench{tag}.",
        "OPSLOOP_APP_ID": f"opsloop-bench{tag}",
        "OPSLOOP_WEB_ENABLED": "false",
        "OPSLOOP_DATA_DIR": str(work / tag / "data"),
        "OPSLOOP_LOG_LEVEL": "warning",
        "OPSLOOP_TIMER_CLOCK": "event",
        "OPSLOOP_SINK_SINGLE_NODE": "true",  # one worker, SQLite ledger in its throwaway data dir
    }
    os.environ.update(env)
    settings = Settings.from_env()
    asyncio.run(apply(settings, load_catalogue(settings.topics_file)))
    ids = asyncio.run(preload(settings, batch, Progress(len(batch), enabled=progress)))
    print(
        f"opsloop bench: {name}: one worker{f' from {root}' if root else ''}, timed from its first decision",
        file=sys.stderr,
    )
    log_path = work / tag / "worker.log"
    worker = (CheckoutWorker(env, log_path, root) if root else WorkerProcess(env, log_path)).start()
    try:
        assert worker.proc is not None
        pids = {"worker": worker.proc.pid}
        if broker is not None and broker.proc is not None:
            pids["broker"] = broker.proc.pid
        cpu = CpuWindow({**pids, "bench reader (this process)": os.getpid()})
        try:
            level = asyncio.run(drain(settings, set(ids), timeout, cpu, Progress(len(batch), enabled=progress)))
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; worker log:\n{worker.log()[-3000:]}") from None
        return Level(name, level.events, level.seconds, level.cpu)
    finally:
        worker.stop()


def run(
    events: int = 20_000, timeout: float = 600.0, progress: bool = True, baseline: Path | None = None
) -> list[Level]:
    """The whole bench; returns L1, L4 (and L4 of the ``baseline`` checkout's worker, when given)."""
    if not 1 <= events <= MAX_EVENTS:
        raise ValueError(f"--events must be between 1 and {MAX_EVENTS:,}")
    if baseline is not None and not (Path(baseline) / "streams" / "cli" / "main.py").is_file():
        raise ValueError(f"--baseline {baseline}: not an opsloop checkout (no streams/cli/main.py)")
    from streams.kafka.admin import apply
    from streams.kafka.catalogue import load_catalogue
    from streams.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="opsloop-bench-"))
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    saved = dict(os.environ)
    try:
        if not bootstrap:
            print("opsloop bench: starting a local Kafka broker", file=sys.stderr)
            broker = LocalKafka(work / "kafka").start()
            bootstrap = broker.bootstrap
        print(f"opsloop bench: rendering {events:,} events", file=sys.stderr)
        batch = zipf_events(events)
        tag = uuid.uuid4().hex[:6]
        os.environ.update({"KAFKA_BOOTSTRAP": bootstrap, "OPSLOOP_TOPIC_PREFIX": f"bench{tag}."})
        settings = Settings.from_env()
        asyncio.run(apply(settings, load_catalogue(settings.topics_file)))
        print("opsloop bench: L1 raw aiokafka passthrough (pre-loading the events first)", file=sys.stderr)
        asyncio.run(preload(settings, batch, Progress(events, enabled=progress)))
        l1 = asyncio.run(passthrough(settings, events, timeout, Progress(events, enabled=progress)))
        levels = [l1, run_l4("L4 one opsloop worker", bootstrap, work, batch, timeout, progress, broker)]
        if baseline is not None:
            levels.append(
                run_l4(
                    "L4 baseline worker", bootstrap, work, batch, timeout, progress, broker, Path(baseline).resolve()
                )
            )
        report(levels, events)
        return levels
    finally:
        if broker is not None:
            broker.close()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(work, ignore_errors=True)
