"""Cron schedules and time zones as configuration: what a schedule file may say.

Validation lives with the model (``runbooks/schedules.yaml`` and ``digest.yaml`` are
checked when they load, with file:line); the slot arithmetic is in
:mod:`streams.core.timers`.
"""

from __future__ import annotations

from datetime import UTC, tzinfo
from typing import Any

from streams.errors import InvalidInputError

__all__ = ["CronError", "validate_cron", "zone_of"]


class CronError(InvalidInputError, ValueError):
    """A cron expression or time zone is invalid."""


def zone_of(tz: str) -> tzinfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return UTC if tz in ("UTC", "utc", "Z") else ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {tz!r} (use an IANA name like Europe/Berlin)") from None


def validate_cron(expr: Any, tz: str = "UTC") -> None:
    from croniter import croniter

    if not isinstance(expr, str) or not croniter.is_valid(expr):
        raise CronError(f"invalid cron expression {expr!r} (five fields: minute hour day month weekday)")
    zone_of(tz)
