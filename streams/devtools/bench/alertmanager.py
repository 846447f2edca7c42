"""L7: Debian's prometheus-alertmanager fed the same alerts, delivering to a local webhook receiver.

The yardstick opsloop is compared with: the same Zipf stream of catalogue alerts is
POSTed to ``/api/v2/alerts`` in batches of 64 (Prometheus's batch size), with the
group_by that matches opsloop's session key for these alerts (``org, alertname,
service``). Timers are shortened (``group_wait`` 1 s, ``group_interval`` 5 s) so the
notifications fall inside the window; a notification's latency is then the group_wait
plus Alertmanager's own work. Measured: alerts/s in, notifications (webhook POSTs) and
their rate, each alert's notify latency (its first POST to the first notification that
holds it), duplicates (an alert notified again in a later notification of its group:
Alertmanager re-sends the whole group when it changes), and Alertmanager's CPU and RSS.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from streams.devtools import childproc
from streams.devtools.bench.measure import Bar, CpuWindow, latency_summary
from streams.devtools.bench.report import Level
from streams.devtools.broker import free_port

BATCH = 64
GROUP_BY = ("org", "alertname", "service")
BINARIES = ("prometheus-alertmanager", "alertmanager")


def render_config(
    webhook_url: str,
    *,
    group_by: Sequence[str] = GROUP_BY,
    group_wait: str = "1s",
    group_interval: str = "5s",
    repeat_interval: str = "4h",
) -> str:
    """Alertmanager's YAML: one route with the bench's grouping, one webhook receiver (JSON is valid YAML)."""
    config = {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": "bench",
            "group_by": list(group_by),
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [
            {"name": "bench", "webhook_configs": [{"url": webhook_url, "send_resolved": False, "max_alerts": 0}]}
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def alert_of(event: Mapping[str, Any], starts_at: dt.datetime) -> dict[str, Any]:
    """An opsloop bench event as the alert Prometheus would have posted (its labels plus ``org``)."""
    return {
        "labels": {**event["labels"], "org": event.get("org") or "default"},
        "annotations": dict(event.get("annotations") or {}),
        "startsAt": starts_at.isoformat(),
        "generatorURL": (event.get("payload") or {}).get("generator_url") or "",
    }


def alert_key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """An alert's identity in Alertmanager: its whole label set."""
    return tuple(sorted(labels.items()))


def binary() -> str:
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)")


def version() -> str:
    out = subprocess.run([binary(), "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "?"


class Receiver:
    """The webhook receiver: notes when each notification came and which alerts it held."""

    def __init__(self) -> None:
        self.notifications: list[tuple[float, list[tuple[tuple[str, str], ...]]]] = []

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        self.notifications.append((time.time(), [alert_key(a["labels"]) for a in body.get("alerts", [])]))
        return web.Response(text="ok")


def summarise(
    first_posted: Mapping[tuple[tuple[str, str], ...], float], notifications: Sequence[tuple[float, Sequence[Any]]]
) -> tuple[list[float], int, int]:
    """Latencies (ms, first post to first notification, per alert notified), duplicates (an alert in a
    notification after its first), and how many distinct alerts were notified."""
    first_seen: dict[Any, float] = {}
    duplicates = 0
    for at, keys in sorted(notifications, key=lambda n: n[0]):
        for key in keys:
            if key in first_seen:
                duplicates += 1
            else:
                first_seen[key] = at
    latencies = [1000 * (at - first_posted[k]) for k, at in first_seen.items() if k in first_posted]
    return latencies, duplicates, len(first_seen)


async def _run(
    am_url: str,
    receiver: Receiver,
    events: Sequence[Mapping[str, Any]],
    cpu: CpuWindow,
    quiet_s: float,
    timeout: float,
    progress: Bar,
) -> tuple[float, float, dict[Any, float]]:
    import aiohttp

    first_posted: dict[Any, float] = {}
    sem = asyncio.Semaphore(4)
    posted = [0]
    async with aiohttp.ClientSession() as session:

        async def post(chunk: Sequence[Mapping[str, Any]]) -> None:
            now = dt.datetime.now(dt.UTC)
            alerts = [alert_of(ev, now) for ev in chunk]
            async with sem:
                at = time.time()
                for a in alerts:
                    first_posted.setdefault(alert_key(a["labels"]), at)
                async with session.post(f"{am_url}/api/v2/alerts", json=alerts) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"Alertmanager answered {resp.status}: {await resp.text()}")
            posted[0] += len(alerts)
            progress.update(posted[0])

        cpu.start()
        start = time.time()
        await asyncio.gather(*(post(events[i : i + BATCH]) for i in range(0, len(events), BATCH)))
        fed = time.time()
        progress.done()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            notified = {k for _, keys in receiver.notifications for k in keys}
            last = max((at for at, _ in receiver.notifications), default=fed)
            if len(notified) >= len(first_posted) and time.time() - last > quiet_s:
                break
        cpu.stop()
    return start, fed, first_posted


def run_l7(events: Sequence[Mapping[str, Any]], work: Path, timeout: float, progress: bool) -> Level:
    """Start Alertmanager and the receiver, feed the events as alerts, wait until each alert was notified and
    the groups are quiet for a group_interval, then read the figures."""
    from aiohttp import web

    work.mkdir(parents=True, exist_ok=True)
    receiver = Receiver()

    async def main() -> Level:
        app = web.Application()
        app.router.add_post("/", receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        hook_port, am_port = free_port(), free_port()
        await web.TCPSite(runner, "127.0.0.1", hook_port).start()
        config = work / "alertmanager.yml"
        config.write_text(render_config(f"http://127.0.0.1:{hook_port}/"))
        log = open(work / "alertmanager.log", "ab")
        proc = childproc.spawn(
            [
                binary(),
                f"--config.file={config}",
                f"--storage.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",  # no gossip: one instance, loopback only
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        try:
            await _ready(f"http://127.0.0.1:{am_port}/-/ready", proc, work)
            cpu = CpuWindow({"alertmanager": proc.pid, "bench feeder+receiver": os.getpid()})
            print(f"opsloop bench: L7 {version()}: feeding {len(events):,} alerts", file=sys.stderr)
            start, fed, first_posted = await _run(
                f"http://127.0.0.1:{am_port}",
                receiver,
                events,
                cpu,
                7.0,
                timeout,
                Bar(len(events), enabled=progress),
            )
        finally:
            childproc.stop(proc, 15)
            await runner.cleanup()
        latencies, duplicates, notified = summarise(first_posted, receiver.notifications)
        times = [at for at, _ in receiver.notifications] or [fed]
        window = max(max(times) - min(times), 1e-3)  # Alertmanager's delivering: first to last notification
        return Level(
            "L7 Alertmanager, alerts in",
            len(events),
            fed - start,
            cpu.used,
            cpu.rss,
            latency=latency_summary(latencies),
            extra={
                "notifications": float(len(receiver.notifications)),
                "notifications /s (first to last)": len(receiver.notifications) / window,
                "distinct alerts": float(len(first_posted)),
                "alerts notified": float(notified),
                "duplicates": float(duplicates),
                "machine busy (cores)": cpu.machine,
            },
            unit="alerts",
        )

    return asyncio.run(main())


async def _ready(url: str, proc: Any, work: Path, timeout: float = 30.0) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {(work / 'alertmanager.log').read_text()[-2000:]}")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"alertmanager not ready in {timeout:.0f}s")
