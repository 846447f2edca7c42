"""A worker joining while the sinks have a backlog for a slow receiver: the rebalance does not wait for it."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from streams.devtools.bench.workers import wait_members
from tests.sinks.fakes import FakeServices
from tests.sinks.helpers import make_effect
from tests.sinks.test_agent import (  # noqa: F401 - pg_ledger_url: a fixture
    pg_ledger_url,
    put,
    read,
    routing_file,
)

pytestmark = pytest.mark.integration

EFFECTS = 160
ANSWER_S = 0.25  # every request answered after this: one lane takes ~45 s for the backlog


def test_a_rebalance_hands_back_the_waiting_effects_and_each_is_still_delivered_once(
    app_topics,
    worker_factory,
    fakes: FakeServices,
    tmp_path: Path,
    pg_ledger_url: str,  # noqa: F811
) -> None:
    """faust's revoke waits for every record an agent holds. The sinks held the whole backlog of a slow
    receiver, and the second worker's join, and so the whole group, waited for it: 38 s here without the
    revoke hook, 5 s with it (140 of the 160 effects handed back)."""
    settings = app_topics
    _, env = routing_file(tmp_path, fakes)
    env["OPSLOOP_SINK_DATABASE_URL"] = pg_ledger_url
    tag = uuid.uuid4().hex[:6]
    effects = [
        make_effect("hooks", "webhook", title=f"backlog {tag} {i}", session_key=f"b-{tag}-{i}", effect_id=f"{tag}-{i}")
        for i in range(EFFECTS)
    ]
    ids = {e["effect_id"] for e in effects}

    def sent() -> list:
        return [r for r in fakes.got("hook", "hooks") if r.headers.get("Idempotency-Key", "") in ids]

    fakes.shed_past(1_000, ANSWER_S)
    try:
        first = worker_factory(**env)
        asyncio.run(put(settings, effects))
        deadline = time.monotonic() + 60
        while len(sent()) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(sent()) >= 3, "the first worker never started delivering"
        joining = time.monotonic()
        worker_factory(**env)
        asyncio.run(wait_members(settings, 2, timeout=120))
        joined = time.monotonic() - joining
        asyncio.run(
            read(
                settings,
                lambda rs: (
                    ids
                    <= {
                        r.value["effect_id"] for r in rs if r.topic == "deliveries" and r.value["status"] == "delivered"
                    }
                ),
                timeout=180,
            )
        )
    finally:
        fakes.shed_past(None)
    accepted = Counter(r.headers["Idempotency-Key"] for r in sent() if r.answered == 200)
    assert set(accepted) == ids and max(accepted.values()) == 1, accepted.most_common(3)  # each once
    handed = [int(n) for n in re.findall(r"sinks: rebalance; (\d+) waiting effects handed back", first.log())]
    assert handed and handed[0] > 0, "the first worker's revoke handed nothing back"
    # the second worker's start-up (a few seconds) and one rebalance, not the ~40 s backlog behind one lane
    assert joined < 25, f"the group took {joined:.0f}s to take the second worker in"
