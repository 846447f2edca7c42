"""The broker stops while a client keeps posting: 2xx means in the topic, 503 means not.

A client thread posts one alert per request (a unique ``seq`` label each) the whole
time; the broker is stopped, the client keeps posting, the broker is started again
on the same data directory and port. Afterwards every alert that got a 2xx is in
events.telemetry exactly once, none that got a 503 is there at all, every 503 carried
Retry-After, and ingest recovered by itself (no restart) and says so on /readyz.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest

from tests.ingest.conftest import (
    IngestServer,
    apply_topics,
    bearer,
    ingest_env,
    read_all_events,
    read_events,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.integration


class Poster(threading.Thread):
    def __init__(self, server: IngestServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.results: list[tuple[int, int, str | None, float]] = []  # (seq, status, Retry-After, seconds)
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        seq = 0
        with httpx.Client(timeout=30) as client:
            while not self.halt.is_set():
                seq += 1
                alert = {
                    "labels": {"alertname": "BrokerDownProbe", "instance": "probe-1", "seq": str(seq)},
                    "startsAt": "2024-05-01T09:50:00Z",
                }
                started = time.monotonic()
                answer = client.post(self.server.url("/api/v2/alerts"), json=[alert], headers=bearer())
                with self.lock:
                    self.results.append(
                        (seq, answer.status_code, answer.headers.get("Retry-After"), time.monotonic() - started)
                    )
                self.halt.wait(0.02)  # pacing, so a fast-failing outage does not spin

    def count(self, status: int, since: int = 0) -> int:
        with self.lock:
            return sum(1 for seq, s, _, _ in self.results if s == status and seq > since)

    def last_seq(self) -> int:
        with self.lock:
            return self.results[-1][0] if self.results else 0


def test_broker_stopped_while_a_client_keeps_posting(kafka_factory, tmp_path):
    broker = kafka_factory()
    env = ingest_env(
        broker.bootstrap,
        "down.",
        OPSLOOP_INGEST_SEND_TIMEOUT_S="2",
        OPSLOOP_INGEST_RECONNECT_BACKOFF_S="0.5",
        OPSLOOP_INGEST_RETRY_AFTER_S="1",
    )
    settings = settings_for(env)
    apply_topics(settings)
    server = IngestServer(env, tmp_path / "ingest.log").start()
    poster = Poster(server)
    poster.start()
    try:
        wait_for(lambda: poster.count(200) >= 20, 30, "20 posts accepted with the broker up")
        stopping_at = poster.last_seq()
        broker.stop()
        stopped_at = poster.last_seq()
        wait_for(lambda: poster.count(503, since=stopped_at) >= 10, 30, "posts answered 503 while the broker is down")
        assert httpx.get(server.url("/readyz"), timeout=10).status_code == 503
        broker.start()
        restarted_at = poster.last_seq()
        wait_for(
            lambda: poster.count(200, since=restarted_at) >= 20, 60, "posts accepted again after the broker restart"
        )
        wait_for(
            lambda: httpx.get(server.url("/readyz"), timeout=10).status_code == 200, 30, "readyz after the restart"
        )
    finally:
        poster.halt.set()
        poster.join(35)
    assert server.alive  # recovered by itself: same process throughout
    # the sends abort_pending failed are retrieved: asyncio logged each at ERROR once collected (a fault probe)
    assert "Future exception was never retrieved" not in (tmp_path / "ingest.log").read_text()

    statuses = Counter(status for _, status, _, _ in poster.results)
    assert set(statuses) <= {200, 503}, statuses
    accepted = {seq for seq, status, _, _ in poster.results if status == 200}
    refused = {seq for seq, status, _, _ in poster.results if status == 503}
    assert all(retry and int(retry) > 0 for _, status, retry, _ in poster.results if status == 503)
    slowest = max(seconds for _, _, _, seconds in poster.results)
    assert slowest < 10, f"a post took {slowest:.1f}s; the send timeout is 2s"

    def seqs(records):
        return Counter(r.value["labels"]["seq"] for r in records if r.value)

    read_events(
        settings, lambda rs: {str(s) for s in accepted} <= set(seqs(rs)), timeout=30, topics=["events.telemetry"]
    )
    written = seqs(read_all_events(settings, idle=2.0, topics=["events.telemetry"]))
    missing = sorted(s for s in accepted if str(s) not in written)
    leaked = sorted(s for s in refused if str(s) in written)
    twice = sorted(s for s, n in written.items() if n > 1)
    print(
        f"\nposts: {len(poster.results)}; 2xx: {len(accepted)}; 503: {len(refused)}; slowest post {slowest:.2f}s; "
        f"records: {sum(written.values())}"
    )
    assert not missing, f"2xx'd but not in the topic: {missing}"
    # A 503 means not written, but for the one case no client can rule out (publisher.py): a post in flight
    # while the broker shut down, which it appended before closing without answering (seen once in ~10 runs:
    # the post after the 20th). A record slipping in from a post answered 503 once the broker was down, when
    # it came back, is what abort_pending prevents, and that stays an error.
    assert all(stopping_at < s <= stopped_at for s in leaked), (
        f"answered 503 but written: {leaked} (only posts sent while the broker was stopping, "
        f"{stopping_at + 1}..{stopped_at}, may be)"
    )
    assert not twice, f"written more than once: {twice}"
    assert set(written) == {str(s) for s in accepted}
