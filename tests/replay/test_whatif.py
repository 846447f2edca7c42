"""Must show: a what-if with one runbook's cooldown changed reports exactly the notifications
that change, proven against a fresh run with that change.

Run A: a real worker with the committed runbooks decides recorded traffic. The
runbook A used most gets another cooldown (shorter than the gap between a resolve
and the next firing if it was longer, longer if it was shorter). The what-if replays
A's topics with the changed set. Run B: a second real worker group on fresh topics,
with the changed runbooks, decides the same traffic. B's notifications must be exactly
the what-if's, and the what-if's added/removed exactly B's minus A's and A's minus B's.
Telemetry only: a session's events then reach decide in one order in both runs.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
import uuid
from collections import Counter

import pytest

from agents.sinks.channels import specs
from streams.devtools.processes import WorkerProcess
from streams.kafka.admin import apply
from streams.kafka.catalogue import load_catalogue
from streams.model.runbooks import load_runbook_set
from streams.replay.run import run_replay
from streams.settings import Settings
from tests.replay.traffic import produce, read_recorded, traffic, wait_decided

pytestmark = pytest.mark.integration


def notices(records) -> Counter:
    return Counter(
        (
            r.value["notify"]["receiver"],
            r.value["notify"]["channel"],
            r.value["session_key"],
            r.value["event_id"],
            r.value["notify"]["action"],
            r.value["notify"]["title"],
        )
        for r in records
        if r.topic == "outbox" and r.value and r.value["type"] == "notify"
    )


def change_cooldown(src, dst, used: Counter) -> tuple[str, str, str]:
    shutil.copytree(src, dst)
    for name, _ in used.most_common():
        path = dst / f"{name}.yaml"
        if not path.exists():
            continue
        text = path.read_text()
        found = re.search(r"cooldown: (\d+)([smh])", text)
        if not found:
            continue
        minutes = int(found.group(1)) * {"s": 1 / 60, "m": 1, "h": 60}[found.group(2)]
        new = "1m" if minutes >= 10 else "30m"
        path.write_text(text[: found.start()] + f"cooldown: {new}" + text[found.end() :])
        return name, found.group(0), new
    raise AssertionError(f"no runbook with a cooldown among {used}")


def test_whatif_cooldown_matches_a_fresh_run(topics, worker_factory, runbooks_dir, opsloop_env, tmp_path, monkeypatch):
    settings_a = topics
    events = traffic(sessions=24, cycles=3, acks=False)
    ids = {e["event_id"] for e in events}
    worker_factory(OPSLOOP_RUNBOOKS_DIR=str(runbooks_dir))
    produce(settings_a, events)
    records_a = wait_decided(settings_a, ids, timeout=90)
    used = Counter(r.value["runbook"] for r in records_a if r.topic == "decisions" and r.value["runbook"])
    changed_dir = tmp_path / "changed"
    name, old, new = change_cooldown(runbooks_dir, changed_dir, used)

    # The what-if, from run A's topics only.
    recorded = read_recorded(settings_a, 0, int(time.time() * 1000))
    result = run_replay(
        recorded,
        load_runbook_set(runbooks_dir, channels=specs()),
        runbooks=load_runbook_set(changed_dir, channels=specs()),
    )
    assert result.replay.differences == [] and result.replay.identical == result.replay.compared
    whatif = result.whatif
    assert whatif is not None

    # Run B: fresh topics and group, the changed runbooks, the same traffic.
    tag = uuid.uuid4().hex[:8]
    env_b = {
        **opsloop_env,
        "OPSLOOP_TOPIC_PREFIX": f"w{tag}.",
        "OPSLOOP_APP_ID": f"opsloop-w{tag}",
        "OPSLOOP_DATA_DIR": str(tmp_path / "data-b"),
        "OPSLOOP_RUNBOOKS_DIR": str(changed_dir),
    }
    for key, value in env_b.items():
        monkeypatch.setenv(key, value)
    settings_b = Settings.from_env()
    asyncio.run(apply(settings_b, load_catalogue(settings_b.topics_file)))  # as `opsloop topics apply` would
    worker_b = WorkerProcess(env_b, tmp_path / "worker-b.log").start()
    try:
        produce(settings_b, events)
        records_b = wait_decided(settings_b, ids, timeout=90)
    finally:
        worker_b.stop()

    a, b = notices(records_a), notices(records_b)
    predicted = Counter()
    for _record, effects in result.changed.results.values():
        for e in effects:
            if e["type"] == "notify":
                n = e["notify"]
                predicted[(n["receiver"], n["channel"], e["session_key"], e["event_id"], n["action"], n["title"])] += 1
    assert a != b, f"changing {name} {old} -> {new} changed no notification: pick traffic that exercises it"
    assert predicted == b
    assert Counter(whatif.added) == b - a and Counter(whatif.removed) == a - b
    summary = whatif.summary()
    assert summary["notifications_added"] - summary["notifications_removed"] == sum(b.values()) - sum(a.values())
    print(
        f"what-if {name} {old} -> {new}: +{len(whatif.added)} -{len(whatif.removed)} notifications; "
        f"fresh run: {sum(a.values())} -> {sum(b.values())}"
    )
