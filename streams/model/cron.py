"""Cron schedules and time zones as configuration: what a schedule file may say.

Validation lives with the model (``runbooks/schedules.yaml`` and ``digest.yaml`` are
checked when they load, with file:line); the slot arithmetic is in
:mod:`streams.core.timers`.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any

from streams.errors import InvalidInputError

__all__ = ["CronError", "validate_cron", "zone_info", "zone_of"]


class CronError(InvalidInputError, ValueError):
    """A cron expression or time zone is invalid."""


def zone_info(tz: str) -> tzinfo:
    """The IANA zone ``tz`` names, as ``zoneinfo`` opens it; CronError when it names none."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a region's folder ("America": IsADirectoryError) or a name longer than a file name can be
        raise CronError(f"unknown time zone {tz[:64]!r} (use an IANA name like Europe/Berlin)") from None


def zone_of(tz: str) -> tzinfo:
    """A schedule's zone: :func:`zone_info`, with ``UTC``, ``utc`` and ``Z`` as UTC."""
    return UTC if tz in ("UTC", "utc", "Z") else zone_info(tz)


def validate_cron(expr: Any, tz: str = "UTC") -> None:
    """A cron expression that parses and has a next slot; ``tz`` a known zone.

    Why the next slot: croniter parses ``0 0 30 2 *`` (30 February) and only fails when asked
    for a slot, which happened in the worker's scheduler on every tick, and a timer that raises
    stops a faust worker.
    """
    from croniter import CroniterBadDateError, croniter

    if not isinstance(expr, str) or not croniter.is_valid(expr):
        raise CronError(f"invalid cron expression {expr!r} (five fields: minute hour day month weekday)")
    zone = zone_of(tz)
    try:
        croniter(expr, datetime(2000, 1, 1, tzinfo=zone)).get_next(datetime)
    except CroniterBadDateError:
        raise CronError(f"cron expression {expr!r} never fires (no date matches it)") from None
