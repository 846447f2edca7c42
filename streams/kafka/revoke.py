"""Hooks that run when a rebalance takes this worker's partitions, before faust waits for its records.

faust's revoke (``App._on_partitions_revoked``) suspends the flow, clears the agents' queues
and then waits (``Consumer.wait_empty``) for every record an agent took and has not
acknowledged, however long that takes; the whole consumer group waits with it. An agent that
holds records for long (the sinks hold an outbox record until its delivery settles, behind a
backlog of up to ``OPSLOOP_SINK_BACKLOG_PER_DESTINATION`` per destination) registers a hook
in ``Runtime.before_revoke`` that lets go of what need not be waited for, before that wait.
The hooks run on a rebalance only; a stop has its own (``agents.worker.QuietWorker.on_stop``).

This patches the one consumer instance's ``wait_empty``, as :mod:`streams.kafka.redelivery`
patches its ``ack`` and ``perform_seek``; ``app.rebalancing`` (set by faust's rebalance
listener before the revoke) and ``app.should_stop`` tell a revoke from a stop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)


def run_before_revoke(app: Any, hooks: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """Run ``hooks`` (a live list: hooks added later run too) before faust's revoke waits for the agents."""
    consumer = app.consumer
    wait_empty = consumer.wait_empty

    async def hooked_wait_empty() -> None:
        if app.rebalancing and not app.should_stop:
            for hook in list(hooks):
                try:
                    await hook()
                except Exception:  # noqa: BLE001 - faust then waits for the records as it always did
                    log.exception("a rebalance hook failed; waiting for the agents' records instead")
        await wait_empty()

    consumer.wait_empty = hooked_wait_empty
