"""A worker killed or stopped mid-delivery: the next worker takes its claim over in seconds, not after the lease."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.sinks.fakes import Answer, FakeServices
from tests.sinks.helpers import make_effect
from tests.sinks.test_agent import (  # noqa: F401 - pg_ledger_url: a fixture
    committed_offsets,
    pg_ledger_url,
    put,
    read,
    routing_file,
)

pytestmark = pytest.mark.integration


class HungPagerDuty:
    """One PagerDuty effect whose first request hangs (the next is answered 200), and its requests."""

    def __init__(self, fakes: FakeServices, tmp_path: Path, ledger_url: str, word: str) -> None:
        _, self.env = routing_file(tmp_path, fakes)
        self.env["OPSLOOP_SINK_DATABASE_URL"] = ledger_url
        self.tag = tag = uuid.uuid4().hex[:6]
        self.title = f"{word} {tag}"
        self.effect = make_effect(
            "pd", "pagerduty", title=self.title, session_key=f"{word}-{tag}", effect_id=f"eff-{tag}"
        )
        self.fakes = fakes
        fakes.script("pagerduty", "pd", Answer(hang_s=100))

    @property
    def hanging_env(self) -> dict[str, str]:
        """A worker that sits on the hung request (its read timeout outlasts the test)."""
        return {**self.env, "OPSLOOP_SINK_READ_TIMEOUT_S": "90"}

    def requests(self) -> int:
        return sum(1 for r in self.fakes.requests if self.title in r.body.decode(errors="replace"))

    def wait_for_the_hung_request(self, deadline: float) -> None:
        while self.requests() < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert self.requests() == 1, "the first worker never started the delivery"

    def delivered(self, settings) -> list:
        """The receipts read until this effect's ``delivered`` one (TimeoutError after 120 s)."""
        effect_id = self.effect["effect_id"]
        return asyncio.run(
            read(
                settings,
                lambda rs: any(
                    r.topic == "deliveries" and r.value["effect_id"] == effect_id and r.value["status"] == "delivered"
                    for r in rs
                ),
                timeout=120,
            )
        )


def test_a_killed_workers_claim_is_taken_over_by_the_next_generation(
    app_topics,
    worker_factory,
    fakes: FakeServices,
    tmp_path: Path,
    pg_ledger_url: str,  # noqa: F811
) -> None:
    settings = app_topics
    pd = HungPagerDuty(fakes, tmp_path, pg_ledger_url, "takeover")
    effect = pd.effect
    first = worker_factory(**pd.hanging_env)
    asyncio.run(put(settings, [effect]))
    pd.wait_for_the_hung_request(time.monotonic() + 60)
    first.kill()
    killed = time.monotonic()

    second = worker_factory(**pd.env)
    records = pd.delivered(settings)
    waited = time.monotonic() - killed
    lease_s = 120 + 5 + 2 + 30  # SinkSettings.lease_ms with the test's read timeout
    assert waited < 60 < lease_s, f"delivered {waited:.0f}s after the kill: the lease was waited out"
    assert pd.requests() == 2 and records
    engine = sa.create_engine(pg_ledger_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT status, claims, claim_generation FROM delivery_ledger")).one()
    engine.dispose()
    assert row.status == "delivered" and row.claims == 2 and row.claim_generation is not None
    second.stop()
    logged = second.log()
    assert logged.count(f"delivery of {effect['effect_id']} to pd waits for the claim") <= 1
    assert "its owner is gone and the partition has a newer owner" in logged


def test_a_worker_stopped_mid_delivery_exits_at_once_and_the_next_one_delivers_the_effect_once(
    app_topics,
    worker_factory,
    fakes: FakeServices,
    tmp_path: Path,
    pg_ledger_url: str,  # noqa: F811
) -> None:
    """SIGTERM while a delivery hangs: faust's stop must not wait for it (it did, until the SIGKILL)."""
    settings = app_topics
    pd = HungPagerDuty(fakes, tmp_path, pg_ledger_url, "stopped")
    first = worker_factory(**pd.hanging_env)
    # A delivered effect first, so the group has a commit: a group that committed nothing is deleted when its
    # last member leaves, and the next one would start again at generation 1, not newer than the claim's.
    asyncio.run(put(settings, [make_effect("log", "log", title=f"first {pd.tag}", session_key=f"f-{pd.tag}")]))
    deadline = time.monotonic() + 60
    while asyncio.run(committed_offsets(settings)) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    asyncio.run(put(settings, [pd.effect]))
    pd.wait_for_the_hung_request(deadline)
    asked = time.monotonic()
    code = first.stop(timeout=60)
    took = time.monotonic() - asked
    assert code == 0 and took < 20, f"SIGTERM took {took:.0f}s and ended with {code}: the stop waited for the delivery"
    assert "1 outbox records left uncommitted for the next owner" in first.log()

    second = worker_factory(**pd.env)  # reads the record again: its offset was not committed
    restarted = time.monotonic()
    records = pd.delivered(settings)
    waited = time.monotonic() - restarted
    second.stop()
    assert records and pd.requests() == 2  # the hung attempt and the one answered: sent once after the restart
    assert waited < 60, f"delivered {waited:.0f}s after the restart: the stopped owner's claim was waited out"
    # the stop forgot its owner and released its claim: taken at once, not after the owner's timeout
    assert "waits for the claim" not in second.log() and "its owner is gone" in second.log()
