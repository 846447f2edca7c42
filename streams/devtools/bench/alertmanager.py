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
from streams.devtools.bench.feed import alert_of, fed_level, feed, wait_delivered, warm_up
from streams.devtools.bench.measure import Bar, CpuWindow, latency_summary
from streams.devtools.bench.receiver import AlertKey, WebhookReceiver, alert_key, group_latencies
from streams.devtools.bench.report import Level
from streams.devtools.broker import free_port

# The slow receiver of L7 and E2E (both senders meet the same one): replies after this long, 503 past this
# many requests in flight.
SLOW_DELAY_S = 0.1
SLOW_LIMIT = 8

GROUP_BY = ("org", "alertname", "service")
__all__ = ["GROUP_BY", "alert_key", "alert_of", "render_config", "run_l7", "summarise"]
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


def binary() -> str:
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)")


def version() -> str:
    out = subprocess.run([binary(), "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "?"


def summarise(
    first_posted: Mapping[AlertKey, float], notifications: Sequence[tuple[float, Sequence[AlertKey]]]
) -> tuple[list[float], int, int]:
    """Latencies (ms, first post to first notification, per alert notified), alerts re-sent (an alert in a
    notification after its first: Alertmanager re-sends the whole group when it changes), and how many distinct
    alerts were notified."""
    first_seen: dict[Any, float] = {}
    resent = 0
    for at, keys in sorted(notifications, key=lambda n: n[0]):
        for key in keys:
            if key in first_seen:
                resent += 1
            else:
                first_seen[key] = at
    latencies = [1000 * (at - first_posted[k]) for k, at in first_seen.items() if k in first_posted]
    return latencies, resent, len(first_seen)


def run_l7(
    events: Sequence[Mapping[str, Any]],
    work: Path,
    timeout: float,
    progress: bool,
    *,
    mode: str = "prompt",
    name: str = "L7 Alertmanager, alerts in",
    quiet_s: float = 7.0,
) -> Level:
    """Start Alertmanager and a receiver (``mode``: see :mod:`streams.devtools.bench.receiver`), feed the events
    as alerts, wait until each group was notified and the receiver is quiet for ``quiet_s``, read the figures."""
    work.mkdir(parents=True, exist_ok=True)
    receiver = WebhookReceiver(mode, delay_s=SLOW_DELAY_S, limit=SLOW_LIMIT).start()
    am_port = free_port()
    config = work / "alertmanager.yml"
    config.write_text(render_config(f"{receiver.url}/"))
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
        asyncio.run(_ready(f"http://127.0.0.1:{am_port}/-/ready", proc, work))
        asyncio.run(warm_up(f"http://127.0.0.1:{am_port}/api/v2/alerts", receiver, timeout))  # as E2E's opsloop side
        cpu = CpuWindow({"alertmanager": proc.pid, "bench feeder+receiver": os.getpid()})
        print(f"opsloop bench: {name} ({version()}, {mode} receiver): feeding {len(events):,} alerts", file=sys.stderr)
        cpu.start()
        fed = asyncio.run(feed(f"http://127.0.0.1:{am_port}/api/v2/alerts", events, Bar(len(events), enabled=progress)))
        wait_delivered(receiver, fed, quiet_s, timeout)
        cpu.stop()
    finally:
        childproc.stop(proc, 15)
        receiver.stop()
    deliveries = list(receiver.deliveries)
    latencies, resent, notified = summarise(fed.first_posted, [(d.at, d.alerts) for d in deliveries])
    level = fed_level(
        name,
        fed,
        cpu,
        receiver,
        group_latencies(deliveries, fed.group_posted),
        {"alerts notified": float(notified), "alerts re-sent (group changed)": float(resent)},
    )
    level.latency = latency_summary(latencies)  # L7's latency is per alert, as before E2E; groups' is in extra
    return level


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
