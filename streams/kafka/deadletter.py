"""Dead-letter records: a poison record is kept whole, with why and where it came from."""

from __future__ import annotations

from typing import Any


def dead_letter(
    *,
    reason: str,
    error: BaseException | str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    failed_at: int,
    stage: str,
) -> dict[str, Any]:
    """The DeadLetter record for a record that could not be processed."""
    return {
        "reason": reason,
        "error_type": error if isinstance(error, str) else type(error).__name__,
        "source_topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key,
        "value": value,
        "failed_at": failed_at,
        "stage": stage,
    }
