"""Benchmark: the decide agent's body (``DecideAgent.handle``) on the bench's events, without Kafka or faust.

Run: PYTHONPATH=<checkout> .venv/bin/python -m tests.decide.bench_agent_body [--events 20000] [--batch 55] [--json F]

The events are ``opsloop bench``'s (catalogue alerts, Zipf sessions, seed 17), with
deterministic ids; they go through the real codec, classifier, runbook set and decide in
batches of ``--batch``, into dict tables whose writes count the bytes a changelog record
would carry (a JSON dump for a mapping, the length of bytes). Printed: CPU µs per event,
the collector's share, bytes per event per topic and table, and hashes of every record
produced and of the tables' contents (decoded), so two checkouts can be compared for
identical output (issue 17's offline measurements, deploy/bench/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import marshal
import random
import time
import uuid
from types import SimpleNamespace
from typing import Any

from streams.kafka.tracked import TrackedDict


class CountingTable(TrackedDict):
    """A dict table that counts its writes and the bytes their changelog records would carry.

    Its rows are where a faust table on the in-memory store keeps them (``table.data.data``),
    so :func:`streams.kafka.tracked.watch_table` tracks its changed keys as in the worker
    (a plain dict would be diffed whole every batch, which the worker never does).
    """

    def __init__(self, name: str, sizes: dict[str, float]) -> None:
        super().__init__()
        self.name, self.sizes = name, sizes

    @property
    def data(self) -> SimpleNamespace:
        return SimpleNamespace(data=self)

    def __setitem__(self, key: Any, value: Any) -> None:
        size = len(value) if isinstance(value, bytes) else len(json.dumps(value, separators=(",", ":")))
        self.sizes[self.name] = self.sizes.get(self.name, 0) + size + len(key)
        self.sizes[self.name + " records"] = self.sizes.get(self.name + " records", 0) + 1
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        self.sizes[self.name + " records"] = self.sizes.get(self.name + " records", 0) + 1
        super().__delitem__(key)


class CountingOut:
    def __init__(self, sizes: dict[str, float]) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []
        self.sizes = sizes

    def add(self, topic: str, key: bytes, value: bytes) -> None:
        self.records.append((topic, key, value))
        self.sizes[topic] = self.sizes.get(topic, 0) + len(value) + len(key)
        self.sizes[topic + " records"] = self.sizes.get(topic + " records", 0) + 1

    async def flush(self) -> None:
        pass

    async def submit(self) -> None:
        pass


class Stream:
    current_event = None

    def _set_current_event(self, event: Any) -> None:
        self.current_event = event


def decoded(value: Any) -> Any:
    """A sessions-table value as a state, whichever way the checkout keeps it."""
    if isinstance(value, bytes):
        return marshal.loads(value[1:]) if value[:1] == b"\x00" else json.loads(value)
    return value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=55)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--storm", type=int, default=0, help="first decide this many distinct firing alerts (untimed): flat cost"
    )
    parser.add_argument("--tune-gc", action="store_true", help="the worker's gc settings (gc.freeze, thresholds)")
    parser.add_argument(
        "--decoded-states", type=int, help="sessions whose decoded state the agent keeps (0: decode every read)"
    )
    args = parser.parse_args()

    from agents.decide import DecideAgent
    from agents.runtime import load_classify
    from agents.sinks.channels import specs
    from streams.core.timers import PartitionClock
    from streams.devtools.bench import storm_events, zipf_events
    from streams.kafka.batchsend import partition_for_key
    from streams.kafka.codec import default_codec
    from streams.model.records import validate_event
    from streams.model.runbooks import load_runbook_set
    from streams.settings import Settings

    codec = default_codec()
    settings = Settings.from_env()
    rset = load_runbook_set(settings.runbooks_dir, channels=specs())
    classify, _ = load_classify()
    events = []
    for i, raw in enumerate(zipf_events(args.events)):
        event = validate_event({"org": "default", "annotations": {}, "payload": {}, **raw})
        event["event_id"] = uuid.UUID(int=random.Random(i).getrandbits(128)).hex
        event["received_at"] = event["occurred_at"] + 5
        events.append(event)
    storm = []
    for raw in storm_events(args.storm, t0=events[0]["occurred_at"] - args.storm - 60_000) if args.storm else []:
        event = validate_event({"org": "default", "annotations": {}, "payload": {}, **raw})
        event["received_at"] = event["occurred_at"] + 5
        storm.append(event)

    def as_messages(batch: list[dict[str, Any]]) -> list[SimpleNamespace]:
        """Each event as the faust event the agent gets (encoded, keyed, on its key's partition)."""
        out = []
        for i, event in enumerate(batch):
            key = event["session_key"].encode()
            message = SimpleNamespace(
                topic="events.telemetry",
                partition=partition_for_key(key, 12),
                offset=i,
                key=key,
                value=codec.encode("opsloop.Event", event),
            )
            out.append(SimpleNamespace(message=message))
        return out

    msgs, storm_msgs = as_messages(events), as_messages(storm)
    sizes: dict[str, float] = {}
    tables = SimpleNamespace(
        sessions=CountingTable("sessions", sizes),
        timers=CountingTable("timers", sizes),
        silences={},
        inhibitors=CountingTable("inhibitors", sizes),
    )

    async def dead_letter(key: Any, value: Any) -> None:
        pass

    agent = DecideAgent(
        settings=settings,
        codec=codec,
        runbooks=rset,
        classify=classify,
        tables=tables,
        clock=PartitionClock(),
        partitions={"outbox": 12, "decisions": 12},
        dead_letters=dead_letter,
    )
    if args.decoded_states is not None:
        agent.decoded.limit = args.decoded_states
    out, stream = CountingOut(sizes), Stream()
    collector = [0.0, 0.0]

    def on_gc(phase: str, info: Any) -> None:
        if phase == "start":
            collector[0] = time.perf_counter()
        else:
            collector[1] += time.perf_counter() - collector[0]

    async def run(batches: list[Any]) -> None:
        for i in range(0, len(batches), args.batch):
            await agent.handle(stream, batches[i : i + args.batch], out)

    if args.tune_gc:
        from agents.worker import tune_gc

        tune_gc()
    if storm_msgs:
        asyncio.run(run(storm_msgs))
        out.records.clear()
        sizes.clear()
    gc.callbacks.append(on_gc)
    start = time.process_time()
    asyncio.run(run(msgs))
    cpu = time.process_time() - start
    gc.callbacks.remove(on_gc)
    records = hashlib.sha256()
    for topic, key, value in out.records:
        records.update(topic.encode() + b"|" + key + b"|" + value)
    contents = {
        "sessions": {k: decoded(v) for k, v in tables.sessions.items()},
        "timers": dict(tables.timers),
        "inhibitors": dict(tables.inhibitors),
    }
    result = {
        "events": args.events,
        "batch": args.batch,
        "storm": args.storm,
        "cpu_us_per_event": round(1e6 * cpu / args.events, 1),
        "gc_us_per_event": round(1e6 * collector[1] / args.events, 1),
        "per_event": {k: round(v / args.events, 3) for k, v in sorted(sizes.items())},
        "records_sha256": records.hexdigest(),
        "tables_sha256": hashlib.sha256(json.dumps(contents, sort_keys=True).encode()).hexdigest(),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
