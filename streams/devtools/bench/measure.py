"""What the bench reads from the kernel and how it summarises: CPU, memory, percentiles, repeats.

CPU comes from ``/proc/<pid>/stat`` (utime + stime) because, on a small machine shared
with other work, CPU-seconds per event moves far less between runs than wall time:
a process that waits for a core is slower, not costlier.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streams.progress import Progress

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, in seconds (None: gone or not readable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    """Every descendant of a process (PostgreSQL's backends are children of its postmaster)."""
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for kid in kids.get(todo.pop(), []):
            out.append(kid)
            todo.append(kid)
    return out


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU of a process and its live descendants (a backend that exited inside a window is not counted)."""
    own = cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(cpu_seconds(kid) or 0.0 for kid in children(pid))


def rss_bytes(pid: int, key: str = "VmRSS") -> int | None:
    """A process's resident memory (``VmRSS``, or ``VmHWM`` for its peak) in bytes; None when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def machine_busy_seconds() -> float:
    """CPU-seconds all cores spent busy since boot (``/proc/stat``: everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


@dataclass
class CpuWindow:
    """CPU used by some processes between :meth:`start` and :meth:`stop`, their resident memory at the stop,
    and how busy the whole machine was (``machine``: cores' worth, e.g. 1.9 of 2): on a shared machine that
    says whether a rung was starved of CPU rather than slow."""

    pids: dict[str, int]
    trees: frozenset[str] = frozenset()  # names whose pid is read with its descendants
    begin: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)
    machine: float = 0.0
    _t0: float = 0.0
    _busy0: float = 0.0

    def _cpu(self, name: str, pid: int) -> float | None:
        return tree_cpu_seconds(pid) if name in self.trees else cpu_seconds(pid)

    @property
    def started(self) -> bool:
        return self._t0 > 0

    def start(self) -> None:
        self.begin = {name: self._cpu(name, pid) or 0.0 for name, pid in self.pids.items()}
        self._t0, self._busy0 = time.monotonic(), machine_busy_seconds()

    def stop(self) -> None:
        wall = time.monotonic() - self._t0
        self.machine = (machine_busy_seconds() - self._busy0) / wall if self._t0 and wall > 0 else 0.0
        for name, pid in self.pids.items():
            now = self._cpu(name, pid)
            if now is not None:
                self.used[name] = now - self.begin.get(name, now)
            mem = rss_bytes(pid)
            if mem is not None:
                self.rss[name] = mem


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks (numpy's default);
    NaN for no values. Tails like p99.9 need ~1,000+ samples to mean anything: the report prints the count."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * min(max(q, 0.0), 100.0) / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(values_ms: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / p99.9 (ms) and the sample count."""
    return {
        "p50": percentile(values_ms, 50),
        "p99": percentile(values_ms, 99),
        "p99.9": percentile(values_ms, 99.9),
        "n": float(len(values_ms)),
    }


@dataclass(frozen=True)
class Spread:
    """Median and range of one figure over repeated runs."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(statistics.median(values), min(values), max(values), len(values))

    def format(self, fmt: str = ",.0f") -> str:
        """``1,234`` for one run, ``1,234 (1,100–1,300)`` for several."""
        if self.runs == 0 or math.isnan(self.median):
            return "-"
        if self.runs == 1 or self.low == self.high:
            return format(self.median, fmt)
        return f"{self.median:{fmt}} ({self.low:{fmt}}–{self.high:{fmt}})"


class Bar(Progress):
    """The stderr progress bar, redrawn at most every 0.2 s (the readers call it per poll, thousands of times)."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        super().__init__(total, enabled)
        self._drawn = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self._drawn >= 0.2 or done >= self.total:
            self._drawn = now
            super().update(done)
