"""Building effects and an in-process dispatcher for the sink tests."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.sinks.channels import registry
from agents.sinks.delivery import Deliverer, Destination, RetryPolicy
from agents.sinks.dispatch import Dispatcher, OutboxRecord
from agents.sinks.ledger import Ledger
from streams.kafka.codec import default_codec
from streams.model.receivers import Receiver
from streams.settings import SinkSettings

_seq = itertools.count()


def make_effect(
    receiver: str,
    channel: str,
    *,
    title: str = "Host out of memory on node-1",
    severity: str = "urgent",
    action: str = "trigger",
    body: str = "Node memory is filling up (< 10% left).",
    fields: Mapping[str, str] | None = None,
    links: list[dict[str, str]] | None = None,
    thread_key: str = "",
    session_key: str = "cluster-a/node-1/HostOutOfMemory",
    effect_id: str | None = None,
    runbook: str = "host-memory",
) -> dict[str, Any]:
    n = next(_seq)
    return {
        "effect_id": effect_id or f"eff-{n:06d}-{channel}",
        "event_id": f"evt-{n:06d}",
        "session_key": session_key,
        "org": "default",
        "type": "notify",
        "created_at": 1_700_000_000_000 + n,
        "runbook": runbook,
        "notify": {
            "channel": channel,
            "receiver": receiver,
            "severity": severity,
            "title": title,
            "body": body,
            "fields": dict(
                fields if fields is not None else {"instance": "node-1:9100", "job": "node", "value": "93.4"}
            ),
            "links": links
            if links is not None
            else [
                {"label": "Acknowledge", "url": "https://opsloop.example.com/ack/1"},
                {"label": "Runbook", "url": "https://runbooks.example.com/host-memory"},
                {"label": "Silence", "url": "https://alertmanager.example.com/#/silences/new"},
            ],
            "dedupe_key": "",
            "thread_key": thread_key,
            "action": action,
        },
        "timer": None,
        "cancel": None,
        "remediate": None,
    }


@dataclass
class ListEmitter:
    receipts: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)

    async def receipt(self, key: bytes, record: dict[str, Any]) -> None:
        self.receipts.append(record)

    async def dead_letter(self, key: bytes | None, record: dict[str, Any]) -> None:
        self.dead.append(record)

    def status(self, effect_id: str) -> list[str]:
        return [r["status"] for r in self.receipts if r["effect_id"] == effect_id]


FAST = RetryPolicy(
    max_attempts=4,
    max_total_s=20,
    backoff_base_s=0.05,
    backoff_max_s=0.2,
    ambiguous_pause_s=0.3,
    connect_timeout_s=1.0,
    read_timeout_s=1.0,
    breaker_threshold=50,
    breaker_cooldown_s=1.0,
)


class Harness:
    """A Dispatcher wired to real HTTP/SMTP, a real ledger engine and a list emitter."""

    def __init__(
        self,
        receivers: Mapping[str, Receiver],
        engine,
        environ: Mapping[str, str],
        policy: RetryPolicy = FAST,
        owner: str = "test-owner",
        **settings: Any,
    ) -> None:
        self.codec = default_codec()
        self.emitter = ListEmitter()
        self.ledger = Ledger(engine).create()
        self.deliverer = Deliverer(policy, environ=environ)
        self.dispatcher = Dispatcher(
            receivers=receivers,
            registry=registry(),
            deliverer=self.deliverer,
            ledger=self.ledger,
            emitter=self.emitter,
            codec=self.codec,
            settings=SinkSettings(**settings),
            owner=owner,
        )
        self._offset = itertools.count()

    async def __aenter__(self) -> Harness:
        await self.deliverer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.dispatcher.close()
        await self.deliverer.close()

    async def submit(self, effect: Mapping[str, Any]) -> asyncio.Future:
        raw = self.codec.encode("opsloop.Effect", dict(effect))
        return await self.dispatcher.submit(
            OutboxRecord("outbox", 0, next(self._offset), effect["session_key"].encode(), raw)
        )

    def destination(self, receiver: str) -> Destination | None:
        """The dispatcher's shared state of one receiver (None before its first effect)."""
        worker = self.dispatcher._workers.get(receiver)  # noqa: SLF001
        return worker.dest if worker is not None else None

    async def until(self, condition: Callable[[Harness], bool], timeout: float, what: str) -> None:
        """Poll ``condition`` (every 10 ms) until it holds; TimeoutError naming ``what``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition(self):
            if loop.time() > deadline:
                raise TimeoutError(f"{what}: not within {timeout:.0f}s")
            await asyncio.sleep(0.01)

    async def run(self, *effects: Mapping[str, Any], timeout: float = 30) -> list[str]:
        futures = [await self.submit(e) for e in effects]
        return list(await asyncio.wait_for(asyncio.gather(*futures), timeout))


@contextlib.contextmanager
def bench_ledger_url(db: str, prefix: str) -> Iterator[str]:
    """A benchmark's ledger database URL: a throwaway PostgreSQL (``pg``, stopped on exit) or a SQLite file."""
    if db != "pg":
        yield f"sqlite:///{tempfile.mkdtemp(prefix=prefix)}/ledger.db"
        return
    from tests.support.postgres import throwaway_url

    with throwaway_url() as url:
        yield url
