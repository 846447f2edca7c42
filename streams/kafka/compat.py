"""Every use of a private faust-streaming / aiokafka attribute, in one place, for the versions it was written for.

faust 0.15 and aiokafka 0.14 leave a few things opsloop needs without a public API
(which table partition a write goes to, the producer faust runs, the offsets a seek
just read, releasing a record without counting it toward a commit, a metadata
refresh). Each is one function here, so an upgrade is checked in one file: importing
this module refuses other major.minor versions than those it was written and tested
for (the restart and kill tests exercise every function).
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, cast

from streams.errors import UnavailableError

WRITTEN_FOR = {"faust-streaming": "0.15", "aiokafka": "0.14"}


class UnsupportedVersionError(UnavailableError):
    """An installed faust-streaming or aiokafka is not the version these internals were written for."""


def check_versions() -> None:
    for package, expected in WRITTEN_FOR.items():
        installed = version(package)
        if ".".join(installed.split(".")[:2]) != expected:
            raise UnsupportedVersionError(
                f"{package} {installed} is installed; streams/kafka/compat.py uses its internals as of {expected}.x "
                "(see pyproject.toml's pins)"
            )


check_versions()


def set_current_event(stream: Any, event: Any) -> None:
    """Point a faust stream's current event at ``event`` (which table partition a write goes to)."""
    stream._set_current_event(event)


def kafka_producer(app: Any) -> Any:
    """The aiokafka producer a faust app runs (for produce batches of our own)."""
    return app.producer._ensure_producer()


def group_generation(app: Any) -> int | None:
    """The consumer-group generation of a faust app's latest assignment (None before the first)."""
    generation = getattr(app, "consumer_generation_id", None)
    return generation if isinstance(generation, int) and generation >= 0 else None


def committed_offsets(consumer: Any) -> dict[Any, int]:
    """The committed offsets a faust consumer's last ``seek_to_committed`` read."""
    return cast("dict[Any, int]", consumer._committed_offset)


def release_unacked(consumer: Any, message: Any) -> None:
    """Let a faust consumer stop waiting for ``message`` without counting it toward the commit.

    The message is marked acknowledged first, so an acknowledgement that comes later
    (a delivery finishing after the release) is a no-op rather than a commit past it.
    """
    from mode.utils.futures import notify

    if message.acked:
        return
    message.acked = True
    consumer._unacked_messages.discard(message)
    notify(consumer._waiting_for_ack)


async def refresh_metadata(consumer: Any) -> None:
    """Ask an aiokafka consumer's client for fresh cluster metadata (new partitions, new topics)."""
    await consumer._client.force_metadata_update()


def abort_producer(producer: Any, error: BaseException) -> None:
    """Fail every unacknowledged batch of an aiokafka producer and stop its sender, synchronously.

    What aiokafka itself does when its sender dies (the accumulator's ``fail_all``), then
    the sender task is cancelled before it can drain again.
    """
    accumulator = getattr(producer, "_message_accumulator", None)
    sender = getattr(producer, "_sender", None)
    if accumulator is not None:
        batches = [b for queue in accumulator._batches.values() for b in queue] + list(accumulator._pending_batches)
        accumulator.fail_all(error)
        # The senders' waits ended already (a timeout is why this runs): mark each send's failure retrieved, or
        # asyncio logs "Future exception was never retrieved" at ERROR for every one, once collected.
        for batch in batches:
            futures = [
                getattr(batch, "future", None),  # the batch API's caller's (no message futures)
                getattr(batch, "_drain_waiter", None),  # the sender's wait for the batch, which was cancelled
                *(f for f, _ in getattr(batch, "_msg_futures", ())),
            ]
            for future in futures:
                if future is not None and future.done() and not future.cancelled():
                    future.exception()
    task = getattr(sender, "sender_task", None)
    if task is not None and not task.done():
        task.cancel()


def changelog_record(table: Any, key: Any, value: Any) -> tuple[str, bytes | None, bytes | None]:
    """(topic, key bytes, value bytes) of the changelog record a faust table writes for ``table[key] = value``
    (``value`` None: the tombstone ``del table[key]`` writes), serialized as faust serializes it."""
    topic = table.changelog_topic
    raw_key, _ = topic.prepare_key(key, table.key_serializer)
    if value is None:
        raw_value, _ = topic.prepare_value(None, "raw")
    else:
        raw_value, _ = topic.prepare_value(value, table.value_serializer)
    return topic.get_topic_name(), raw_key, raw_value


def set_row_quietly(table: Any, key: Any, value: Any) -> None:
    """Set (``value`` None: remove) a row of a faust table's store without faust's changelog send
    (the caller sends the :func:`changelog_record` itself)."""
    store = table.data
    if value is not None:
        store[key] = value
    elif key in store:
        del store[key]
