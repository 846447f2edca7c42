"""The fault harness's reduced scenario, run in CI: one SIGKILL, three poison records, a 429 and a 5xx.

126 events of 18 sessions go through a fault-free baseline run (the oracle: its notify
effect ids) and then through ``scenarios.reduced``: the worker is SIGKILLed once the
first half has settled and restarted (from its committed offsets and its tables'
changelogs, with the second half and the poison ahead of it), PagerDuty answers 429 with
Retry-After once and 503 once, and an undecodable record, one with an unknown schema
fingerprint and valid Avro with impossible values are appended to events.telemetry.

The full set (kills mid-stream, a worker joining and leaving, the broker and PostgreSQL
stopped, the data directory deleted, a classifier that raises) is one command,
``.venv/bin/python -m tests.faults``, which starts a broker and a database of its own to
stop (README "Fault harness"); it takes several minutes, so CI runs this one.
"""

from __future__ import annotations

import pytest

from tests.faults import harness, scenarios

pytestmark = pytest.mark.integration


def test_one_kill_and_poison_lose_nothing_and_send_nothing_twice(opsloop_env, tmp_path, fakes, ledger_urls):
    bench = scenarios.Bench(
        env=opsloop_env,
        tmp=tmp_path,
        fakes=fakes,
        ledger_url=ledger_urls,
        events=harness.fixed_input(sessions=16, cycles=1, repeats=3),
    )
    scenarios.baseline(bench)
    harness.check(scenarios.reduced(bench))
