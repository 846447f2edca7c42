"""L6: one worker whose sinks deliver to local HTTP receivers, with the delivery ledger on PostgreSQL.

The runbooks are copied with every receiver of ``routing.yaml`` that would leave the
machine (Slack, Teams, PagerDuty, email) turned into a signed webhook to a receiver in
this process (``/<receiver name>``); ``log`` and ``remediate`` (dry run) stay. So the
whole path runs: decide, outbox, the sink's ledger claim and completion in PostgreSQL,
the HTTP POST, the receipt. Measured: events/s drained, notifications delivered and
their rate (first to last delivery), duplicates (an ``Idempotency-Key`` delivered
twice), and the CPU of the worker, the broker and PostgreSQL (all its backends).
Notifications held by a group_wait whose event time has not come by the end of the
workload stay pending: the count is what the window delivered, not every notification.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from streams.devtools.bench.measure import Bar
from streams.devtools.bench.receiver import WebhookReceiver
from streams.devtools.bench.report import Level
from streams.devtools.bench.workers import Rig, level_of
from streams.devtools.bench.workload import preload
from streams.devtools.broker import free_port

LOCAL_CHANNELS = ("log", "remediate")
SIGNING_ENV = "OPSLOOP_BENCH_SIGNING_KEY"


# Lanes per local receiver, more than E2E's slow receiver serves at once (8): the sinks learn that limit from
# its 503s and hold their requests to it (agents/sinks/concurrency.py), and the extra lanes keep it busy while
# others wait on the ledger (a claim ~5 ms and a completion ~14 ms per effect, at 0.1 s per answer; with 8
# lanes one receiver took 60-63 notifications/s of its 80, with 16, 75: tests/sinks/bench_storm.py).
LOCAL_CONCURRENCY = 16


def local_routing(text: str, base_url: str) -> str:
    """``routing.yaml`` with each receiver that would leave the machine made a webhook to ``base_url/<name>``."""
    data = yaml.safe_load(text)
    for receiver in data.get("receivers", []):
        if receiver.get("channel") in LOCAL_CHANNELS:
            continue
        receiver.update(channel="webhook", settings={"url": f"{base_url}/{receiver['name']}"})
        receiver["secrets"] = {"signing_key": SIGNING_ENV}
        # the local receiver tells a repeat by its Idempotency-Key, as a deduplicating receiver does: the
        # lanes an operator gives such a receiver (README, "Sinks"); the default is one
        receiver["concurrency"] = LOCAL_CONCURRENCY
    return str(yaml.safe_dump(data, sort_keys=False))


def local_runbooks(
    source: Path, target: Path, base_url: str, render: Callable[[str, str], str] = local_routing
) -> Path:
    """A copy of the runbooks whose ``routing.yaml`` is ``render(text, base_url)``."""
    shutil.copytree(source, target)
    routing = target / "routing.yaml"
    routing.write_text(render(routing.read_text(), base_url))
    return target


def ledger_postgres() -> tuple[Any, Path]:
    """A throwaway PostgreSQL (not started) for the delivery ledger, and its directory to remove after."""
    from streams.devtools.postgres import LocalPostgres, pg_bindir

    bindir = pg_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL's server is not installed (apt-get install postgresql)")
    pg_root = Path(tempfile.mkdtemp(prefix="opsloop-bench-pg-"))  # in /tmp: the postgres user must reach it
    return LocalPostgres(pg_root, free_port(), bindir), pg_root


def sink_rig(bootstrap: str, work: Path, broker: Any, pg: Any, runbooks: Path, **env: str) -> Rig:
    """A rig whose worker uses ``runbooks`` (receivers turned into signed webhooks) and the ledger on ``pg``,
    PostgreSQL's CPU counted with the rung's (``env``: more of the worker's environment)."""
    rig = Rig(
        bootstrap,
        work,
        broker,
        extra_env={
            "OPSLOOP_RUNBOOKS_DIR": str(runbooks),
            "OPSLOOP_SINK_DATABASE_URL": pg.url,
            "OPSLOOP_SINK_SINGLE_NODE": "false",  # the ledger is the shared database, as in production
            SIGNING_ENV: "bench-signing-key",
            **env,
        },
    )
    rig.extra_pids["postgres"] = int((pg.datadir / "postmaster.pid").read_text().split()[0])
    return rig


def run_l6(
    bootstrap: str,
    work: Path,
    batch: Sequence[dict[str, Any]],
    timeout: float,
    progress: bool,
    broker: Any,
    quiet_s: float = 5.0,
) -> Level:
    from streams.settings import Settings

    pg, pg_root = ledger_postgres()
    receivers = WebhookReceiver("prompt").start()
    rig: Rig | None = None
    try:
        pg.start()
        runbooks = local_runbooks(
            Path(Settings.from_env().runbooks_dir),
            work / f"l6-runbooks-{receivers.port}",
            receivers.url,
        )
        rig = sink_rig(bootstrap, work, broker, pg, runbooks)
        ids = asyncio.run(preload(rig.settings, batch, Bar(len(batch), enabled=progress)))
        print("opsloop bench: L6 one worker delivering to local HTTP receivers, ledger on PostgreSQL", file=sys.stderr)
        rig.start_workers(1)
        seen, cpu = rig.decisions(set(ids), timeout, progress)
        tail = rig.cpu()
        tail.start()
        rig.settle(min(timeout, 180.0))  # the sinks have worked through the outbox
        receivers.quiet_for(quiet_s, timeout)
        tail.stop()
        level = level_of("L6 one worker + sinks (HTTP, PostgreSQL)", seen, cpu)
        for name, secs in tail.used.items():
            level.cpu[name] = level.cpu.get(name, 0.0) + secs  # the window runs on to the last delivery
        times = [d.at for d in receivers.deliveries]
        if times:
            level.seconds = max(seen.seconds, max(times) - seen.first_ts / 1000)
        level.extra.update(
            {
                "decided /s": seen.count / max(seen.seconds, 1e-3),
                **receivers.summary(),
                "receivers hit": float(len({d.path for d in receivers.deliveries})),
            }
        )
        return level
    finally:
        if rig is not None:
            rig.close()
        receivers.stop()
        pg.stop()
        shutil.rmtree(pg_root, ignore_errors=True)
