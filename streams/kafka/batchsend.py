"""Sending many records as one produce batch per topic-partition.

The decide agent writes two to three records per event (effects and the decision).
Handing each one to the producer separately costs an ``await`` and the producer's
per-record bookkeeping, which profiling showed to be the largest part of the agent's
per-event cost; appending them to one aiokafka batch per partition and submitting
the batches costs a fraction of it. Partitions are chosen exactly as Kafka's default
partitioner does (murmur2 of the key), so records keep the partition of their key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from aiokafka.partitioner import murmur2

from streams.kafka.compat import changelog_record, set_row_quietly


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as aiokafka and the Java client) picks."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


class PartitionBatcher:
    """Collect (topic, key, value) records; :meth:`flush` submits one batch per topic-partition."""

    def __init__(self, producer: Any, partitions: Mapping[str, int]) -> None:
        self.producer = producer  # an aiokafka AIOKafkaProducer
        self.partitions = dict(partitions)
        self._pending: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
        self._partition_cache: dict[tuple[bytes, int], int] = {}
        self.inflight: list[Any] = []  # futures of records sent elsewhere that the next flush waits for

    def add(self, topic: str, key: bytes, value: bytes) -> None:
        count = self.partitions[topic]
        cached = self._partition_cache.get((key, count))
        if cached is None:
            if len(self._partition_cache) > 100_000:
                self._partition_cache.clear()
            cached = self._partition_cache[(key, count)] = partition_for_key(key, count)
        self._pending.setdefault((topic, cached), []).append((key, value))

    def __len__(self) -> int:
        return sum(len(v) for v in self._pending.values())

    async def flush(self) -> None:
        """Submit everything collected and wait until Kafka acknowledged all of it (and :attr:`inflight`)."""
        pending, self._pending = self._pending, {}
        futures, self.inflight = self.inflight, []
        for (topic, partition), records in pending.items():
            batch = self.producer.create_batch()
            for key, value in records:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await self.producer.send_batch(batch, topic, partition=partition))
                    batch = self.producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"a record of {len(value)} bytes does not fit in a produce batch for {topic}")
            if batch.record_count():
                batch.close()  # complete: a closed batch is sent at once, not after the producer's linger
                futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        if futures:
            await asyncio.gather(*futures)


class ChangelogRows(MutableMapping[Any, Any]):
    """A faust table whose writes reach its store at once and whose changelog records are kept for
    :meth:`ChangelogSends.send` (serialized as faust would): faust's own path builds a message, a
    future and a buffer entry per record before handing it to the producer. Reads go to the table."""

    def __init__(self, table: Any, sends: ChangelogSends, partition: int | None = None) -> None:
        self.table, self.sends, self.partition = table, sends, partition

    def __getitem__(self, key: Any) -> Any:
        return self.table.data[key]

    def get(self, key: Any, default: Any = None) -> Any:
        return self.table.data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.table.data

    def __iter__(self) -> Iterator[Any]:
        return iter(self.table.data)

    def __len__(self) -> int:
        return len(self.table.data)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._write(key, value)

    def __delitem__(self, key: Any) -> None:
        if key not in self.table.data:
            raise KeyError(key)
        self._write(key, None)

    def _write(self, key: Any, value: Any) -> None:
        topic, raw_key, raw_value = changelog_record(self.table, key, value)
        set_row_quietly(self.table, key, value)
        self.sends.records.append((topic, raw_key, raw_value, self.partition))


class ChangelogSends:
    """Changelog records of table rows already written, to hand to the producer in the order written.

    Each goes to aiokafka's ``send`` (appended to the open batch of its partition, as faust's
    own sends are, so it rides with other records), for ``partition`` (the source event's, as
    faust picks it for a co-partitioned table) or, when None (a global table), the partition
    the producer's partitioner picks, as for faust. The returned futures join ``out``'s in-flight
    ones: the next :meth:`PartitionBatcher.flush` waits for them, and a flush of the producer
    (faust's, before it commits offsets) waits for the records themselves.
    """

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    async def send(self, out: PartitionBatcher) -> None:
        records, self.records = self.records, []
        for topic, key, value, partition in records:
            out.inflight.append(await out.producer.send(topic, value, key=key, partition=partition))
