"""The faust agents, registered explicitly on an :class:`streams.app.Opsloop`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.app import Opsloop


def register_all(ops: "Opsloop") -> None:
    from agents import decide, monitor

    monitor.register(ops)
    decide.register(ops)
    from agents import timers; timers.register(ops)  # noqa: E702 - the ticker (issue 4)
    from agents import scheduler; scheduler.register(ops)  # noqa: E702 - cron (issue 4)
    from agents import digest; digest.register(ops)  # noqa: E702 - daily digest (issue 7)
    from agents.sinks import agent as sinks
    sinks.register(ops)
