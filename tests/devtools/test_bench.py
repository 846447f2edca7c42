"""``opsloop bench``'s pieces that need no broker: the event mix, the CPU reading, the report."""

from __future__ import annotations

import io
import os
from collections import Counter

from streams.cli.main import build_parser
from streams.devtools.bench import Level, cpu_seconds, report, zipf_events


def test_events_are_catalogue_alerts_with_zipf_sessions_over_about_a_thousand_services():
    events = zipf_events(5_000)
    assert len(events) == 5_000 and all(e["kind"] == "telemetry" for e in events)
    services = Counter(e["labels"]["service"] for e in events)
    top = services.most_common(1)[0][1]
    assert 200 < len(services) <= 1_000  # a long tail
    assert top > 10 * (5_000 / len(services))  # and a few loud ones
    assert zipf_events(50) == zipf_events(50)  # seeded: the same run twice


def test_cpu_seconds_reads_proc_and_the_report_prints_rate_ratio_and_cpu_per_million():
    assert cpu_seconds(os.getpid()) is not None and cpu_seconds(2**22 + 12345) is None
    out = io.StringIO()
    report([Level("L1", 1000, 0.1, {"p": 0.02}), Level("L4", 1000, 1.0, {"worker": 0.4})], 1000, out)
    text = out.getvalue()
    assert "10,000" in text and "1,000" in text and "L4 / L1" in text and "0.100" in text and "worker 400" in text


def test_bench_is_a_subcommand():
    args = build_parser().parse_args(["bench", "--events", "100"])
    assert args.events == 100 and args.func.__name__ == "cmd_bench"
