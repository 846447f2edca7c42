"""``opsloop bench``: the ladder, on one broker, one workload, in one run (``--repeat``: median and range).

Rungs (``--ladder``, comma-separated):

- ``L1`` raw aiokafka passthrough (the transport's ceiling);
- ``L2`` L1 plus decode, batched classify, pure decide into a dict, encode (the application's floor);
- ``L3`` a plain faust agent forwarding bytes (what faust costs);
- ``L4`` one ``opsloop worker`` (``L4b``: the same with ``--baseline DIR``'s worker);
- ``L5`` two workers in one group;
- ``L6`` one worker whose sinks deliver to local HTTP receivers, the ledger on PostgreSQL;
- ``R<pct>`` a fixed rate of pct % of the L4 drain rate (implies L4), with event → decision latency; with
  ``--baseline``, the baseline worker is offered the same rates too (``R<pct>b``), side by side;
- ``FLAT`` per-event CPU with ``--storms`` (default 1,000 and 100,000) alerts already firing, one worker per
  size, their timed windows interleaved (five rounds) and compared window by window, and the idle CPU after
  such a storm;
- ``L7`` Debian's prometheus-alertmanager fed the same alerts;
- ``E2E`` end to end, for a prompt and a slow receiver (200 after a delay, 503 past a number in flight): the
  same alerts POSTed to Alertmanager (as L7) and to ``opsloop ingest`` (→ one worker → its sinks, the ledger on
  PostgreSQL), each delivering to a fresh receiver of that mode: alerts/s in, notifications and their rate,
  per-group notify latency, duplicates, on both sides (:mod:`streams.devtools.bench.e2e`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from streams.devtools.bench.measure import Bar
from streams.devtools.bench.receiver import MODES as E2E_MODES
from streams.devtools.bench.report import Level, report
from streams.devtools.broker import LocalKafka
from streams.errors import UnavailableError

MAX_EVENTS = 2_000_000
MAX_REPEAT = 20
MAX_STORM = 1_000_000
RUNGS = ("L1", "L2", "L3", "L4", "L4b", "L5", "L6", "L7", "FLAT", "E2E")
DEFAULT_LADDER = "L1,L2,L3,L4,R50,L5,L7"
DEFAULT_STORMS = (1_000, 100_000)


class BenchFailedError(UnavailableError):
    """A rung could not finish (a timeout, a crashed worker); the report shows the others and what failed."""


def parse_ladder(text: str) -> tuple[list[str], list[float]]:
    """``"L1,L4,R50,R80"`` → (rungs, fixed-rate fractions). An ``R`` rung brings L4 with it (its rate is a
    fraction of L4's). Raises ValueError naming an unknown rung."""
    rungs: list[str] = []
    rates: list[float] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        upper = item.upper()
        if upper.startswith("R") and upper[1:].isdigit():
            pct = int(upper[1:])
            if not 1 <= pct <= 100:
                raise ValueError(f"--ladder {item}: a fixed rate is 1-100 % of the L4 drain rate")
            rates.append(pct / 100)
            upper = "L4"
        elif upper == "L4B":
            upper = "L4b"
        if upper not in RUNGS:
            raise ValueError(f"--ladder: unknown rung {item!r}; known: {', '.join(RUNGS)}, R<pct> (e.g. R50)")
        if upper not in rungs:
            rungs.append(upper)
    if not rungs:
        raise ValueError("--ladder: no rung named")
    return rungs, rates


def parse_storms(text: str) -> list[int]:
    """``"1000,100000"`` → [1000, 100000] (each 1 .. 1,000,000)."""
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--storms {text!r}: comma-separated whole numbers, e.g. 1000,100000") from None
    if not sizes or any(not 1 <= s <= MAX_STORM for s in sizes):
        raise ValueError(f"--storms: sizes between 1 and {MAX_STORM:,}")
    return sizes


def parse_e2e_modes(text: str) -> list[str]:
    """``"slow"`` → ["slow"]: E2E's receiver modes to run, in the order given (each of E2E_MODES, once)."""
    modes: list[str] = []
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        if part not in E2E_MODES:
            raise ValueError(f"--e2e-modes: unknown mode {part!r}; known: {', '.join(E2E_MODES)}")
        if part not in modes:
            modes.append(part)
    if not modes:
        raise ValueError(f"--e2e-modes: no mode named; known: {', '.join(E2E_MODES)}")
    return modes


def run(
    events: int = 20_000,
    timeout: float = 600.0,
    progress: bool = True,
    baseline: Path | None = None,
    *,
    ladder: str = DEFAULT_LADDER,
    repeat: int = 1,
    storms: Sequence[int] = DEFAULT_STORMS,
    rate_seconds: float = 20.0,
    channels: Mapping[str, Any] | None = None,
    e2e_modes: Sequence[str] = E2E_MODES,
    out: Any = sys.stdout,
) -> list[Level]:
    """The selected rungs, ``repeat`` times, on one broker (started here unless ``KAFKA_BOOTSTRAP``); prints the
    report and returns every run's levels."""
    rungs, rates = parse_ladder(ladder)
    if baseline is not None and "L4b" not in rungs:
        rungs.append("L4b")
    if not 1 <= events <= MAX_EVENTS:
        raise ValueError(f"--events must be between 1 and {MAX_EVENTS:,}")
    if not 1 <= rate_seconds <= 600:
        raise ValueError("--rate-seconds must be between 1 and 600")
    if not 1 <= repeat <= MAX_REPEAT:
        raise ValueError(f"--repeat must be between 1 and {MAX_REPEAT}")
    if "L4b" in rungs:
        if baseline is None:
            raise ValueError("--ladder L4b needs --baseline DIR (another opsloop checkout, e.g. from git archive)")
        if not (Path(baseline) / "streams" / "cli" / "main.py").is_file():
            raise ValueError(f"--baseline {baseline}: L4b needs an opsloop checkout (with streams/cli/main.py)")
    if "L7" in rungs or "E2E" in rungs:
        from streams.devtools.bench.alertmanager import binary

        try:
            binary()
        except FileNotFoundError as exc:
            raise ValueError(f"L7/E2E: {exc}") from None
    work = Path(tempfile.mkdtemp(prefix="opsloop-bench-"))
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    saved = dict(os.environ)
    levels: list[Level] = []
    failures: list[str] = []
    try:
        if not bootstrap:
            print("opsloop bench: starting a local Kafka broker", file=sys.stderr)
            broker = LocalKafka(work / "kafka").start()
            bootstrap = broker.bootstrap
        from streams.devtools.bench.workload import zipf_events

        print(f"opsloop bench: rendering {events:,} events", file=sys.stderr)
        batch = zipf_events(events)
        for i in range(repeat):
            if repeat > 1:
                print(f"opsloop bench: run {i + 1} of {repeat}", file=sys.stderr)
            levels += run_once(
                rungs,
                rates,
                batch,
                bootstrap,
                broker,
                work,
                timeout,
                progress,
                baseline,
                storms,
                rate_seconds,
                channels or {},
                failures,
                e2e_modes,
            )
        report(levels, events, out)
        for failure in failures:
            print(f"FAILED: {failure}", file=out)
        if failures:
            raise BenchFailedError(f"{len(failures)} rung(s) failed; the figures above are the rest")
        return levels
    finally:
        if broker is not None:
            broker.close()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(work, ignore_errors=True)


def run_transport(
    rungs: Sequence[str],
    batch: Sequence[dict[str, Any]],
    bootstrap: str,
    broker: LocalKafka | None,
    work: Path,
    timeout: float,
    progress: bool,
    channels: Mapping[str, Any],
) -> list[Level]:
    """L1, L2 and L3 on one pre-loaded topic (each reads it from the start in its own consumer group)."""
    from streams.devtools.bench import workers
    from streams.devtools.bench.transport import app_floor, passthrough
    from streams.devtools.bench.workload import preload
    from streams.kafka.admin import apply
    from streams.kafka.catalogue import load_catalogue
    from streams.settings import Settings

    n = len(batch)
    levels: list[Level] = []
    os.environ.update({"KAFKA_BOOTSTRAP": bootstrap, "OPSLOOP_TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:6]}."})
    settings = Settings.from_env()
    asyncio.run(apply(settings, load_catalogue(settings.topics_file)))
    print("opsloop bench: pre-loading the events for L1-L3", file=sys.stderr)
    asyncio.run(preload(settings, batch, Bar(n, enabled=progress)))
    pids = {"broker": broker.proc.pid} if broker is not None and broker.proc is not None else {}
    if "L1" in rungs:
        print("opsloop bench: L1 raw aiokafka passthrough", file=sys.stderr)
        levels.append(asyncio.run(passthrough(settings, n, timeout, Bar(n, enabled=progress), pids)))
    if "L2" in rungs:
        print("opsloop bench: L2 decode, classify, decide, encode (a dict for state)", file=sys.stderr)
        levels.append(asyncio.run(app_floor(settings, n, timeout, Bar(n, enabled=progress), channels, pids)))
    if "L3" in rungs:
        print("opsloop bench: L3 faust passthrough agent", file=sys.stderr)
        levels.append(workers.run_l3(bootstrap, settings, work, n, timeout, progress, broker))
    return levels


def run_once(
    rungs: Sequence[str],
    rates: Sequence[float],
    batch: Sequence[dict[str, Any]],
    bootstrap: str,
    broker: LocalKafka | None,
    work: Path,
    timeout: float,
    progress: bool,
    baseline: Path | None,
    storms: Sequence[int],
    rate_seconds: float,
    channels: Mapping[str, Any],
    failures: list[str],
    e2e_modes: Sequence[str] = E2E_MODES,
) -> list[Level]:
    """One pass over the ladder, in rung order (L1-L3 share one pre-loaded topic, each worker rung its own).
    The environment is put back after each rung: Settings read it, and no rung may leak its own settings
    (L6's ledger URL, say) into the next. A rung that fails (times out, its worker crashed) is noted in
    ``failures`` and the ladder goes on."""
    from streams.devtools.bench import workers

    levels: list[Level] = []
    saved = dict(os.environ)

    def rung(step: Any) -> None:
        try:
            out = step()
            levels.extend(out if isinstance(out, list) else [out])
        except (TimeoutError, RuntimeError, OSError) as exc:  # one rung failing must not lose the others' figures
            levels.extend(getattr(exc, "levels", []))  # what a rung with several sides measured before it failed
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"opsloop bench: a rung failed: {str(exc)[:4000]}", file=sys.stderr)
            failures.append(first)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    if {"L1", "L2", "L3"} & set(rungs):
        rung(lambda: run_transport(rungs, batch, bootstrap, broker, work, timeout, progress, channels))
    if "L4" in rungs:
        name = "L4 one opsloop worker"
        rung(
            lambda: workers.run_l4(
                name, bootstrap, work, batch, timeout, progress, broker, rates=rates, rate_seconds=rate_seconds
            )
        )
    if "L4b" in rungs and baseline is not None:
        root = Path(baseline).resolve()
        l4 = next((level.rate for level in levels if level.name == "L4 one opsloop worker"), None)
        rung(
            lambda: workers.run_l4(
                "L4b baseline worker",
                bootstrap,
                work,
                batch,
                timeout,
                progress,
                broker,
                root=root,
                rates=rates if l4 else (),
                rate_seconds=rate_seconds,
                rate_of=l4,
            )
        )
    if "L5" in rungs:
        rung(lambda: workers.run_l5(bootstrap, work, batch, timeout, progress, broker))
    if "L6" in rungs:
        from streams.devtools.bench.sinks import run_l6

        rung(lambda: run_l6(bootstrap, work, batch, timeout, progress, broker))
    if "FLAT" in rungs:
        rung(lambda: workers.run_flat(bootstrap, work, batch, storms, timeout, progress, broker))
    if "L7" in rungs:
        from streams.devtools.bench.alertmanager import run_l7

        rung(lambda: run_l7(batch, work / f"l7-{uuid.uuid4().hex[:6]}", timeout, progress))
    if "E2E" in rungs:
        from streams.devtools.bench.e2e import run_e2e

        rung(lambda: run_e2e(bootstrap, work, batch, timeout, progress, broker, modes=e2e_modes))
    return levels
