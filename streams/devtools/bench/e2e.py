"""E2E: ingest → decide → delivered, beside Alertmanager, for a prompt and a slow receiver, in one run.

For each receiver mode (``prompt``: 200 at once; ``slow``: replies after
``SLOW_DELAY_S``, 503 past ``SLOW_LIMIT`` requests in flight; see
:mod:`streams.devtools.bench.receiver`), the same alerts are POSTed the same way
(:mod:`streams.devtools.bench.feed`) first to Debian's Alertmanager (L7's setup), then to
``opsloop ingest``'s ``/api/v2/alerts``, whose events one ``opsloop worker`` decides and
whose sinks deliver, the ledger on PostgreSQL, to a fresh receiver of the same mode.

Comparable grouping and timers: Alertmanager groups by ``[org, alertname, service]``
with ``group_wait`` 1 s and ``group_interval`` 5 s; opsloop's session key for these
alerts is ``{org}:alert:{alertname}:{service}`` (runbooks/sessions.yaml), and its
routing here is ``runbooks/routing.yaml`` with the same timers, no inhibit rules (the
Alertmanager config has none) and every receiver that would leave the machine made a
signed webhook to the receiver (L6's rewrite). The worker runs the default ``hybrid``
timer clock (the bench's other rungs use ``event``): group waits fire on the wall clock,
as Alertmanager's do.

Counted the same way on both sides: a *notification* is a webhook request the receiver
accepted (a 503 is not one); the rate is notifications over first to last; a
*duplicate* is the same notification accepted again (opsloop: the same Idempotency-Key,
i.e. effect id; Alertmanager: the same group key with the same alert set); the latency
is per group, from its first alert's post to its first notification. What differs:
opsloop may send more than one notification per group (a runbook's first escalation
step beside the route), and Alertmanager re-sends a group whose alert set grew (a new
notification, counted, not a duplicate).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from streams.devtools import childproc
from streams.devtools.bench.alertmanager import SLOW_DELAY_S, SLOW_LIMIT, run_l7
from streams.devtools.bench.feed import fed_level, feed, wait_delivered, warm_up
from streams.devtools.bench.measure import Bar, percentile
from streams.devtools.bench.receiver import MODES, WebhookReceiver, group_latencies
from streams.devtools.bench.report import Level
from streams.devtools.bench.sinks import ledger_postgres, local_routing, local_runbooks, sink_rig
from streams.devtools.bench.workers import Rig
from streams.devtools.broker import free_port
from streams.errors import OpsloopError
from streams.settings import ROOT

GROUP_WAIT = "1s"
GROUP_INTERVAL = "5s"
TOKEN_NAME = "bench"


def e2e_routing(text: str, base_url: str, group_wait: str = GROUP_WAIT, group_interval: str = GROUP_INTERVAL) -> str:
    """``routing.yaml`` for E2E: L6's local receivers, Alertmanager's timers of L7, no inhibit rules."""
    data = yaml.safe_load(local_routing(text, base_url))
    data["route"].update(group_wait=group_wait, group_interval=group_interval, repeat_interval="4h")
    data["inhibit_rules"] = []
    return str(yaml.safe_dump(data, sort_keys=False))


class IngestProcess:
    """``opsloop ingest`` on a loopback port, as a child process dying with the bench."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env, self.log_path = env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> IngestProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = childproc.spawn(
                [sys.executable, "-m", "streams.cli.main", "ingest", "--host", "127.0.0.1", "--port", str(self.port)],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
            )
        return self

    def ready(self, timeout: float = 60.0) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"opsloop ingest exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"opsloop ingest not ready in {timeout:.0f}s")

    def stop(self) -> None:
        childproc.stop(self.proc, 15)
        self.proc = None


def run_e2e(
    bootstrap: str,
    work: Path,
    batch: Sequence[dict[str, Any]],
    timeout: float,
    progress: bool,
    broker: Any,
    modes: Sequence[str] = MODES,
    quiet_s: float = 7.0,
) -> list[Level]:
    """Per mode: Alertmanager, then opsloop, on the same alerts and a receiver of that mode."""
    levels: list[Level] = []
    pg, pg_root = ledger_postgres()
    failed: list[str] = []
    try:
        pg.start()
        for mode in modes:
            for side in ("Alertmanager", "opsloop"):
                try:
                    if side == "Alertmanager":
                        name, where = f"E2E {mode}: Alertmanager", work / f"e2e-am-{uuid.uuid4().hex[:6]}"
                        levels.append(run_l7(batch, where, timeout, progress, mode=mode, name=name))
                    else:
                        levels.append(_opsloop(bootstrap, work, batch, timeout, progress, broker, pg, mode, quiet_s))
                except (TimeoutError, RuntimeError, OSError) as exc:  # the other sides' figures still count
                    print(f"opsloop bench: E2E {mode} {side} failed: {str(exc)[:4000]}", file=sys.stderr)
                    failed.append(f"E2E {mode} {side}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    finally:
        pg.stop()
        shutil.rmtree(pg_root, ignore_errors=True)
    if failed:
        raise PartialRungError("; ".join(failed), levels)
    return levels


class PartialRungError(OpsloopError, RuntimeError):
    """Some sides of a rung failed; ``levels`` holds what the others measured (the runner reports them)."""

    def __init__(self, message: str, levels: list[Level]) -> None:
        super().__init__(message)
        self.levels = levels


def _opsloop(
    bootstrap: str,
    work: Path,
    batch: Sequence[dict[str, Any]],
    timeout: float,
    progress: bool,
    broker: Any,
    pg: Any,
    mode: str,
    quiet_s: float,
) -> Level:
    from streams.settings import Settings

    receiver = WebhookReceiver(mode, delay_s=SLOW_DELAY_S, limit=SLOW_LIMIT).start()
    rig: Rig | None = None
    ingest: IngestProcess | None = None
    token = secrets.token_hex(16)
    try:
        runbooks = local_runbooks(
            Path(Settings.from_env().runbooks_dir),
            work / f"e2e-runbooks-{receiver.port}",
            receiver.url,
            render=e2e_routing,
        )
        rig = sink_rig(bootstrap, work, broker, pg, runbooks, OPSLOOP_TIMER_CLOCK="hybrid")
        ingest = IngestProcess(
            {**rig.env, f"OPSLOOP_INGEST_TOKEN_{TOKEN_NAME.upper()}": token}, rig.work / "ingest.log"
        )
        ingest.start()
        rig.start_workers(1)
        ingest.ready()
        _wait_joined(rig, timeout)
        warm = asyncio.run(
            warm_up(f"{ingest.url}/api/v2/alerts", receiver, timeout, headers={"Authorization": f"Bearer {token}"})
        )
        print(f"opsloop bench: E2E {mode}: opsloop warmed up in {warm:.1f} s", file=sys.stderr)
        cpu = rig.cpu()
        if ingest.proc is not None:
            cpu.pids["ingest"] = ingest.proc.pid
        print(f"opsloop bench: E2E {mode}: opsloop, feeding {len(batch):,} alerts to ingest", file=sys.stderr)
        cpu.start()
        fed = asyncio.run(
            feed(
                f"{ingest.url}/api/v2/alerts",
                batch,
                Bar(len(batch), enabled=progress),
                headers={"Authorization": f"Bearer {token}"},
            )
        )
        if not wait_delivered(receiver, fed, quiet_s, timeout):
            print(f"opsloop bench: E2E {mode}: opsloop not quiet within {timeout:.0f}s", file=sys.stderr)
        cpu.stop()
        outbox_at = outbox_times(asyncio.run(read_all(rig.settings, "outbox")))
        dead = dead_letter_reasons(asyncio.run(read_all(rig.settings, "outbox.dlq")))
        for reason, n in dead.most_common(3):
            print(f"opsloop bench: E2E {mode}: opsloop dead-lettered {n:,}: {reason} ...", file=sys.stderr)
        if not all(w.alive for w in rig.workers):
            raise RuntimeError(f"E2E {mode}: the worker exited; logs:\n{rig.logs()}")
    finally:
        if ingest is not None:
            ingest.stop()
        if rig is not None:
            rig.close()
        receiver.stop()
    deliveries = list(receiver.deliveries)
    latencies = group_latencies(deliveries, fed.group_posted)
    lateness = [1000 * (d.at - d.created) for d in deliveries if d.created]
    sink_ms = [1000 * d.at - outbox_at[d.identity] for d in deliveries if d.identity in outbox_at]
    return fed_level(
        f"E2E {mode}: opsloop (ingest, worker, sinks)",
        fed,
        cpu,
        receiver,
        latencies,
        {
            # how late after its due time (the effect's created_at: a group wait's timer) each was delivered
            "due to delivered p50 (ms)": percentile(lateness, 50),
            "due to delivered p99 (ms)": percentile(lateness, 99),
            # the sinks' part of it: the notify effect's outbox record → the receiver has it
            "outbox to delivered p50 (ms)": percentile(sink_ms, 50),
            "outbox to delivered p99 (ms)": percentile(sink_ms, 99),
            "dead letters": float(sum(dead.values())),
        },
    )


async def read_all(settings: Any, name: str) -> list[tuple[int, dict[str, Any]]]:
    """Every record on topic ``name`` (logical) now: (timestamp ms, decoded value)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.kafka.codec import default_codec

    codec, topic = default_codec(), settings.topic_prefix + name
    consumer = AIOKafkaConsumer(**settings.kafka_client_config(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    out: list[tuple[int, dict[str, Any]]] = []
    try:
        await consumer._client._wait_on_metadata(topic)  # noqa: SLF001 - aiokafka has no public way to load one topic
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return out
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        left = {tp for tp in tps if ends[tp] > 0}
        while left:
            for tp, records in (await consumer.getmany(*left, timeout_ms=1000, max_records=5_000)).items():
                out.extend((msg.timestamp, codec.decode(msg.value)) for msg in records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return out


def outbox_times(records: Sequence[tuple[int, dict[str, Any]]]) -> dict[str, int]:
    """Effect id → its outbox record's timestamp (ms), for every notify effect."""
    return {effect["effect_id"]: ts for ts, effect in records if effect.get("type") == "notify"}


def dead_letter_reasons(records: Sequence[tuple[int, dict[str, Any]]]) -> Counter[str]:
    """outbox.dlq's dead letters by the first words of their reason (what kind of failure, not which effect)."""
    return Counter(" ".join(str(letter.get("reason", "")).split()[:3]) for _, letter in records)


def _wait_joined(rig: Rig, timeout: float) -> None:
    """The worker is in its group (Stable, one member) before the first post: its start-up is not timed. A fresh
    group has no coordinator for a moment: asked again until the deadline."""
    from streams.devtools.bench.workers import wait_members

    deadline = time.monotonic() + min(timeout, 120.0)
    while True:
        try:
            asyncio.run(wait_members(rig.settings, 1, timeout=max(1.0, deadline - time.monotonic())))
            return
        except Exception as exc:  # noqa: BLE001 - aiokafka's coordinator errors; the deadline bounds it
            if time.monotonic() > deadline or not all(w.alive for w in rig.workers):
                raise TimeoutError(f"the worker did not join its group: {exc}; logs:\n{rig.logs()}") from None
            time.sleep(0.5)
