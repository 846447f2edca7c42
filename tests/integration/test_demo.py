"""The README's demo: its own broker, one outbox record per alert, exit 0, nothing left running."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def test_demo_prints_one_outbox_record_per_alert_and_leaves_nothing_behind():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSLOOP_", "KAFKA_BOOTSTRAP"))}
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli.main", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "starting a local Apache Kafka broker" in out
    pushed = int(re.search(r"pushed (\d+) alerts", out).group(1))
    match = re.search(r"outbox: (\d+) effects for (\d+) alerts", out)
    assert pushed == 6 and int(match.group(2)) == pushed and int(match.group(1)) >= pushed
    sessions = set(re.findall(r"session=(\S+)", out))
    assert len(sessions) == pushed  # one printed record (at least) per pushed alert
    # keyed as ingest keys them (runbooks/sessions.yaml): the alert and its service, not a hash
    assert all(re.fullmatch(r"acme:alert:[A-Za-z0-9]+:[a-z0-9-]+", s) for s in sessions), sessions
    notified = set(re.findall(r"notify → \S+  action=trigger  effect=\S+  session=(\S+)", out))
    assert notified == sessions  # each alert's first notification
    delivered = re.search(r"delivered: (\d+) of (\d+) chat notifications", out)
    assert delivered and int(delivered.group(1)) == int(delivered.group(2)) >= pushed
    assert len(re.findall(r"^  slack:", out, flags=re.M)) == int(delivered.group(1))
    workdir = re.search(r"demo data in (\S+)", out).group(1)
    leftovers = _processes_mentioning(workdir)  # this run's broker and worker, not another demo's
    assert leftovers == [], leftovers
    assert not Path(workdir).exists()
