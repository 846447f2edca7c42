"""``opsloop bench``: the ladder from a raw Kafka passthrough to opsloop workers and Alertmanager, in one run.

See :mod:`streams.devtools.bench.runner` for the rungs and deploy/bench/BENCHMARKS.md for results.
"""

from streams.devtools.bench.measure import CpuWindow, cpu_seconds, latency_summary, percentile, rss_bytes
from streams.devtools.bench.report import Level, report
from streams.devtools.bench.runner import DEFAULT_LADDER, MAX_EVENTS, parse_e2e_modes, parse_ladder, parse_storms, run
from streams.devtools.bench.workload import T0, clock_ticks, storm_events, zipf_events

__all__ = [
    "T0",
    "DEFAULT_LADDER",
    "MAX_EVENTS",
    "CpuWindow",
    "Level",
    "clock_ticks",
    "cpu_seconds",
    "latency_summary",
    "parse_e2e_modes",
    "parse_ladder",
    "parse_storms",
    "percentile",
    "report",
    "rss_bytes",
    "run",
    "storm_events",
    "zipf_events",
]
