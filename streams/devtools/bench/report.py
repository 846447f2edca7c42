"""One rung's measured figures, and the printed report (several runs: median and range).

Kept free of Kafka so the formatting is tested without a broker.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from streams.devtools.bench.measure import Spread


@dataclass
class Level:
    """What one rung measured in one run: ``events`` handled in ``seconds``, and per process its CPU-seconds
    and resident memory over that window; ``latency`` (ms: p50, p99, p99.9, n) and ``extra`` figures when
    the rung has them (notifications/s, duplicates, idle CPU %)."""

    name: str
    events: int
    seconds: float
    cpu: dict[str, float]
    rss: dict[str, int] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)
    unit: str = "events"

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def rung(self) -> str:
        """The rung's short name (``L4``, ``R50``): the first word of its name."""
        return self.name.split()[0]

    def cpu_per_million(self) -> dict[str, float]:
        """CPU-seconds per million events, per process (the steadier figure on a shared machine)."""
        return {name: secs / self.events * 1e6 for name, secs in self.cpu.items()} if self.events else {}


def group(levels: Sequence[Level]) -> dict[str, list[Level]]:
    """Runs of the same rung together, in the order rungs first ran."""
    out: dict[str, list[Level]] = {}
    for level in levels:
        out.setdefault(level.name, []).append(level)
    return out


def _per_process(runs: Sequence[Level], values: str) -> str:
    names: list[str] = []
    for run in runs:
        names += [n for n in (run.cpu_per_million() if values == "cpu" else run.rss) if n not in names]
    parts = []
    for name in names:
        if values == "cpu":
            spread = Spread.of([r.cpu_per_million()[name] for r in runs if name in r.cpu])
            parts.append(f"{name} {spread.format()}")
        else:
            spread = Spread.of([r.rss[name] / 2**20 for r in runs if name in r.rss])
            parts.append(f"{name} {spread.format()}")
    return ", ".join(parts) or "-"


FLAT_NAME = re.compile(r"F(\d+) flat cost")  # what flat_name() writes: FLAT's windows, by storm size


def flat_name(storm: int) -> str:
    """The name of FLAT's windows with ``storm`` alerts firing (one Level per window, :func:`flat_lines`)."""
    return f"F{storm} flat cost, {storm:,} firing"


def report(levels: Sequence[Level], n: int, out: TextIO = sys.stdout, *, note: str = "") -> None:
    """The figures of every rung: rate, CPU-s per million events and RSS per process; latency and extras where
    measured; each rung's rate over L1's (and L5's over L4's). Several runs of a rung: median (range)."""
    runs = group(levels)
    # FLAT's windows are several per run (workers.run_flat), not repeats of the run
    repeats = max((len(r) for name, r in runs.items() if not FLAT_NAME.match(name)), default=1)
    head = f"\nopsloop bench: {n:,} events (Zipf sessions over ~1,000 services, catalogue alerts)"
    if repeats > 1:
        head += f", {repeats} runs: median (range)"
    print(head + (f"; {note}" if note else ""), file=out)
    print(f"{'rung':40} {'per second':>22} {'seconds':>8}   CPU-s per million events", file=out)
    for name, rs in runs.items():
        rate = Spread.of([r.rate for r in rs]).format()
        secs = Spread.of([r.seconds for r in rs]).format(".1f")
        print(f"{name:40} {rate:>22} {secs:>8}   {_per_process(rs, 'cpu')}", file=out)
    rss = [(name, _per_process(rs, "rss")) for name, rs in runs.items() if any(r.rss for r in rs)]
    if rss:
        print("\nresident memory at the end of the window (MB)", file=out)
        for name, text in rss:
            print(f"{name:40} {text}", file=out)
    lat = [(name, rs) for name, rs in runs.items() if any(r.latency for r in rs)]
    if lat:
        print(f"\n{'latency (ms)':40} {'p50':>18} {'p99':>18} {'p99.9':>18} {'samples':>8}", file=out)
        for name, rs in lat:
            cells = [Spread.of([r.latency[q] for r in rs if q in r.latency]).format(",.1f") for q in ("p50", "p99")]
            cells.append(Spread.of([r.latency["p99.9"] for r in rs if "p99.9" in r.latency]).format(",.1f"))
            samples = Spread.of([r.latency.get("n", 0) for r in rs]).median
            print(f"{name:40} {cells[0]:>18} {cells[1]:>18} {cells[2]:>18} {samples:8,.0f}", file=out)
    extras = [(name, rs) for name, rs in runs.items() if any(r.extra for r in rs)]
    if extras:
        print("", file=out)
        for name, rs in extras:
            keys: list[str] = []
            for r in rs:
                keys += [k for k in r.extra if k not in keys]
            cells = []
            for k in keys:
                values = [r.extra[k] for r in rs if k in r.extra]
                fmt = ",.0f" if all(float(v).is_integer() for v in values) else ",.1f"
                cells.append(f"{k} {Spread.of(values).format(fmt)}")
            print(f"{name:40} {'; '.join(cells)}", file=out)
    _ratios(runs, out)
    for line in (*flat_lines(levels), *e2e_lines(levels), *must_show_lines(levels)):
        print(line, file=out)


def flat_pairs(levels: Sequence[Level]) -> tuple[int, dict[int, list[tuple[float, float]]]]:
    """FLAT's windows paired round by round: the smallest storm size and, per larger one, (worker CPU-s per
    million events with the smallest storm firing, with this one). The k-th window of one storm size ran in the
    same round as the k-th of the other (interleaved, see ``workers.run_flat``), so each pair was taken under
    the same machine conditions."""
    by_storm: dict[int, list[Level]] = {}
    for level in levels:
        match = FLAT_NAME.match(level.name)
        if match:
            by_storm.setdefault(int(match.group(1)), []).append(level)
    if len(by_storm) < 2:
        return 0, {}
    base = min(by_storm)

    def worker(level: Level) -> float:
        return level.cpu_per_million().get("worker", 0.0)

    pairs = {}
    for storm in sorted(by_storm)[1:]:
        found = [(worker(b), worker(a)) for a, b in zip(by_storm[storm], by_storm[base]) if worker(b) > 0]
        if found:
            pairs[storm] = found
    return base, pairs


def flat_lines(levels: Sequence[Level]) -> list[str]:
    """FLAT's must-show: the worker's CPU per event with the larger storm firing over that with the smallest,
    window by window (:func:`flat_pairs`), and the median of those ratios."""
    base, by_storm = flat_pairs(levels)
    lines = []
    for storm, pairs in by_storm.items():
        ratios = [big / small for small, big in pairs]
        windows = "; ".join(f"{small:,.0f} vs {big:,.0f} ({big / small:.2f})" for small, big in pairs)
        lines.append(
            f"F{storm} / F{base} worker CPU-s per million events, window by window: {windows}; "
            f"median ratio {Spread.of(ratios).median:.2f}"
        )
    return ["", "flat cost (one worker per storm size, their windows interleaved)", *lines] if lines else []


E2E_RATE = "notifications /s (first to last)"
BUSY_KEY = "machine busy (cores)"


def median_extra(levels: Sequence[Level], key: str) -> float:
    """The median over runs of one of the levels' extra figures (0 where a run lacks it)."""
    return Spread.of([r.extra.get(key, 0.0) for r in levels]).median


def e2e_sides(levels: Sequence[Level]) -> dict[str, tuple[float, float, float, float]]:
    """Per receiver mode of E2E run on both sides: (opsloop's notifications/s, Alertmanager's, opsloop's
    duplicates, Alertmanager's), medians over runs."""
    sides: dict[str, dict[str, list[Level]]] = {}
    for level in levels:
        if level.name.startswith("E2E ") and ":" in level.name:
            mode, side = level.name[4:].split(":", 1)
            key = "opsloop" if "opsloop" in side else "alertmanager"
            sides.setdefault(mode, {}).setdefault(key, []).append(level)

    out = {}
    for mode, by_side in sides.items():
        if set(by_side) == {"opsloop", "alertmanager"}:
            ours, theirs = by_side["opsloop"], by_side["alertmanager"]
            out[mode] = (
                median_extra(ours, E2E_RATE),
                median_extra(theirs, E2E_RATE),
                median_extra(ours, "duplicates"),
                median_extra(theirs, "duplicates"),
            )
    return out


def e2e_lines(levels: Sequence[Level]) -> list[str]:
    """Per receiver mode of E2E: opsloop's notifications/s over Alertmanager's, and both sides' duplicates
    (medians over runs). The must-show: a ratio of at least 1 and no duplicate on opsloop's side."""
    lines = [
        f"E2E {mode} receiver: opsloop / Alertmanager notifications/s {ours / max(theirs, 1e-9):.2f} "
        f"({ours:,.0f} vs {theirs:,.0f}); duplicates opsloop {dup_ours:,.0f}, Alertmanager {dup_theirs:,.0f}"
        for mode, (ours, theirs, dup_ours, dup_theirs) in e2e_sides(levels).items()
    ]
    return (["", "end to end (same alerts, same receiver, same run)", *lines]) if lines else []


def _ratios(runs: dict[str, list[Level]], out: TextIO) -> None:
    by_rung = {rs[0].rung: rs for rs in runs.values()}
    lines = []
    for base in ("L1", "L4"):
        if base not in by_rung:
            continue
        base_rate = Spread.of([r.rate for r in by_rung[base]]).median
        for name, rs in runs.items():
            rung = rs[0].rung
            wanted = rung in ("L2", "L3", "L4", "L4b") if base == "L1" else rung in ("L5", "L4b")
            if wanted and base_rate:
                ratio = Spread.of([r.rate for r in rs]).median / base_rate
                lines.append(f"{rung + ' / ' + base:40} {ratio:22.3f}   ({name})")
    if lines:
        print("\nrate ratios (medians)", file=out)
        for line in lines:
            print(line, file=out)
    if "L4" in by_rung and "L5" in by_rung:
        print(scaling_note(by_rung["L4"], by_rung["L5"]), file=out)


def scaling_note(l4: Sequence[Level], l5: Sequence[Level], cores: int | None = None) -> str:
    """Why two workers are (not) 1.6x one: the workers' CPU per event together, and how busy the machine was.
    A machine already busy on every core while one worker drains has no CPU left for a second one."""
    cores = cores or os.cpu_count() or 1

    def workers(levels: Sequence[Level]) -> float:
        return Spread.of(
            [sum(v for k, v in r.cpu_per_million().items() if k.startswith("worker")) for r in levels]
        ).median

    busy4, busy5 = median_extra(l4, BUSY_KEY), median_extra(l5, BUSY_KEY)
    speedup = Spread.of([r.rate for r in l5]).median / max(Spread.of([r.rate for r in l4]).median, 1e-9)
    note = (
        f"L5 scaling: {speedup:.2f}x one worker; workers' CPU-s per million events {workers(l5):,.0f} together "
        f"(one worker {workers(l4):,.0f}); machine busy {busy4:.1f} of {cores} cores during L4, {busy5:.1f} during L5"
    )
    if busy4 >= 0.9 * cores:
        note += ": CPU-bound already with one worker, so a second cannot add throughput here"
    return note


# Issue 17's must-shows, as the bench judges them (README, "Performance").
L4_OVER_L1 = 0.25  # one worker against the raw client (0.5 is the design goal)
R50_P99_MS = 50.0  # event -> decision p99 at 50 % of the L4 drain rate
FLAT_RATIO = 1.2  # CPU per event with the largest storm firing over that with the smallest
IDLE_KEY = "idle CPU % (10 s after settling)"
IDLE_PCT = 5.0  # the worker's CPU 10 s after a storm settled, % of one core
L5_OVER_L4 = 1.6  # two workers over one, unless the machine had no room for a second (must_show_lines)


def _verdict(met: bool, what: str, figure: str) -> str:
    return f"  {what:62} {'met' if met else 'NOT MET'}: {figure}"


def must_show_lines(levels: Sequence[Level], cores: int | None = None) -> list[str]:
    """Each must-show the run has the rungs for, met or not, with the figure it was judged on (medians over
    runs): so a run says at a glance where the worker stands, and a rung left out is not a pass."""
    cores = cores or os.cpu_count() or 1
    runs = group(levels)
    by_rung = {rs[0].rung: rs for rs in runs.values()}

    def rate(rung: str) -> float:
        return Spread.of([r.rate for r in by_rung[rung]]).median

    lines = []
    if "L1" in by_rung and "L4" in by_rung:
        ratio = rate("L4") / max(rate("L1"), 1e-9)
        lines.append(_verdict(ratio >= L4_OVER_L1, f"L4 >= {L4_OVER_L1} x L1 (design goal 0.5)", f"{ratio:.3f}"))
    p99s = [r.latency["p99"] for r in by_rung.get("R50", []) if "p99" in r.latency]
    if p99s:
        p99 = Spread.of(p99s).median
        lines.append(_verdict(p99 < R50_P99_MS, f"R50 p99 event -> decision < {R50_P99_MS:.0f} ms", f"{p99:,.1f} ms"))
    for storm, pairs in flat_pairs(levels)[1].items():
        median = Spread.of([big / small for small, big in pairs]).median
        lines.append(
            _verdict(
                median <= FLAT_RATIO,
                f"CPU per event, {storm:,} firing, <= {FLAT_RATIO} x the smallest storm",
                f"median of {len(pairs)} windows {median:.2f}",
            )
        )
    # after L4's drain and after each FLAT storm (not the baseline's L4b: another checkout's worker)
    idle = [lv.extra[IDLE_KEY] for lv in levels if IDLE_KEY in lv.extra and not lv.rung.endswith("b")]
    if idle:
        lines.append(
            _verdict(
                max(idle) < IDLE_PCT,
                f"worker CPU 10 s after a drain or storm < {IDLE_PCT:.0f} % of a core",
                f"highest {max(idle):.1f} %",
            )
        )
    for mode, (ours, theirs, dup_ours, dup_theirs) in e2e_sides(levels).items():
        ratio = ours / max(theirs, 1e-9)
        lines.append(
            _verdict(
                ratio >= 1.0 and dup_ours == 0,
                f"E2E {mode}: notifications/s >= Alertmanager's, 0 duplicates",
                f"{ratio:.2f} x ({ours:,.0f} vs {theirs:,.0f}/s), duplicates {dup_ours:,.0f} (Alertmanager {dup_theirs:,.0f})",
            )
        )
    if "L4" in by_rung and "L5" in by_rung:
        speedup = rate("L5") / max(rate("L4"), 1e-9)
        busy4, busy5 = median_extra(by_rung["L4"], BUSY_KEY), median_extra(by_rung["L5"], BUSY_KEY)
        what = f"L5 >= {L5_OVER_L4} x L4, or the CPU figures say why not"
        # the machine cannot show it: two workers kept every core busy, or one worker's L4 already used more
        # than 1/1.6 of the cores (the broker and the bench share them)
        no_room = busy5 >= 0.9 * cores or busy4 * L5_OVER_L4 > cores
        figure = f"{speedup:.2f} x; machine busy {busy4:.1f} of {cores} cores in L4, {busy5:.1f} in L5"
        if speedup < L5_OVER_L4 and no_room:
            figure += ": no room for a second worker on this machine"
        lines.append(_verdict(speedup >= L5_OVER_L4 or no_room, what, figure))
    return ["", "must-show (issue 17)", *lines] if lines else []
