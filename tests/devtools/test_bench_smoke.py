"""A tiny ``opsloop bench`` on the session broker: the command runs its rungs end to end and prints the report.

Only that it runs and reports is checked; its figures are the bench's to print, not a test's to assert.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from streams.settings import ROOT


def test_a_tiny_bench_runs_l1_l2_and_alertmanager_and_prints_the_report(kafka_bootstrap: str):
    ladder = "L1,L2,L7" if shutil.which("prometheus-alertmanager") or shutil.which("alertmanager") else "L1,L2"
    run = subprocess.run(
        [sys.executable, "-m", "streams.cli.main", "bench", "--events", "300", "--ladder", ladder, "--no-progress"],
        env={**os.environ, "KAFKA_BOOTSTRAP": kafka_bootstrap},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "L1 aiokafka passthrough" in run.stdout and "L2 decode+classify+decide+encode" in run.stdout
    assert "L2 / L1" in run.stdout
    if "L7" in ladder:
        assert "L7 Alertmanager" in run.stdout and "duplicates" in run.stdout


@pytest.mark.parametrize("flags", [["--ladder", "L9"], ["--events", "0"], ["--repeat", "0"], ["--storms", "0"]])
def test_bad_flags_are_refused_before_anything_starts(flags: list[str]):
    run = subprocess.run(
        [sys.executable, "-m", "streams.cli.main", "bench", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0 and "bench" not in run.stdout
