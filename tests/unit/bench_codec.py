"""Micro-benchmark: µs per Avro encode/decode, fastavro re-parsing the schema per call vs the marked parse.

Run: PYTHONPATH=. .venv/bin/python -m tests.unit.bench_codec [--n 20000]

"before" hands fastavro the plain parse (no ``__fastavro_parsed`` marker: fastavro
parses it again on every call, which is what the codec did); "after" is the codec
as it is (the marked ``runtime`` parse). Both run in this one process, interleaved,
so the figures share the machine's noise. Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import io
import time

from fastavro import schemaless_reader, schemaless_writer

from streams.kafka.codec import HEADER_LEN, MAGIC, default_codec


def sample_event(i: int) -> dict:
    return {
        "event_id": f"e-{i}",
        "session_key": f"acme:HostHighCpuLoad:web-{i % 100}",
        "kind": "telemetry",
        "type": "alert.firing",
        "source": "alertmanager",
        "org": "acme",
        "occurred_at": 1_700_000_000_000 + i,
        "received_at": 1_700_000_000_500 + i,
        "labels": {"alertname": "HostHighCpuLoad", "severity": "warning", "instance": f"web-{i % 100}:9100"},
        "annotations": {"summary": "CPU above 80%", "description": "CPU load is > 80%"},
        "payload": {
            "status": "firing",
            "starts_at": 1_700_000_000_000,
            "ends_at": None,
            "generator_url": "http://prom/graph?g0.expr=up",
            "fingerprint": "abc",
            "metric": None,
            "value": None,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    codec = default_codec()
    version = codec.current("opsloop.Event")
    events = [sample_event(i) for i in range(args.n)]

    def encode_before(ev: dict) -> bytes:
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(version.fingerprint)
        schemaless_writer(buf, version.parsed, ev)
        return buf.getvalue()

    def decode_before(data: bytes) -> dict:
        return schemaless_reader(io.BytesIO(memoryview(data)[HEADER_LEN:]), version.parsed, None)

    blobs = [codec.encode("opsloop.Event", ev) for ev in events]
    assert [encode_before(ev) for ev in events[:100]] == blobs[:100]
    assert [decode_before(b) for b in blobs[:100]] == [codec.decode(b) for b in blobs[:100]]

    best: dict[str, float] = {}

    def timed(label: str, fn, items) -> None:
        start = time.perf_counter()
        for item in items:
            fn(item)
        us = (time.perf_counter() - start) / len(items) * 1e6
        best[label] = min(best.get(label, us), us)

    for _ in range(args.rounds):
        timed("encode before", encode_before, events)
        timed("encode after", lambda ev: codec.encode("opsloop.Event", ev), events)
        timed("decode before", decode_before, blobs)
        timed("decode after", codec.decode, blobs)
    print(f"opsloop.Event, {args.n} records, best of {args.rounds} interleaved rounds (µs per call)")
    print(f"{'':8} {'before':>8} {'after':>8} {'speed-up':>9}")
    for op in ("encode", "decode"):
        b, a = best[f"{op} before"], best[f"{op} after"]
        print(f"{op:8} {b:8.1f} {a:8.1f} {b / a:8.1f}x")


if __name__ == "__main__":
    main()
