"""``opsloop worker``: build the runtime, register every agent on it, run faust.

Workers scale out by joining one consumer group (the app id); Kafka spreads the
partitions and faust moves table state through the changelog topics.

The agents are registered here, explicitly and in one place; none depends on another
having been registered first (they share the :class:`~agents.runtime.Runtime`, not
module state).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust

from agents import monitor, sink
from agents.decide import DecideAgent
from agents.digest import DigestAgent
from agents.runtime import Runtime, build_runtime
from agents.scheduler import Scheduler
from agents.timers import Ticker
from streams.kafka.admin import apply, ensure_internal, render
from streams.kafka.catalogue import load_catalogue
from streams.kafka.fetch import deliver_without_tasks
from streams.kafka.inloop import consume_in_loop
from streams.kafka.redelivery import guard_redelivery
from streams.kafka.revoke import run_before_revoke
from streams.logs import logging_config, register_secret_env, register_secrets
from streams.settings import Settings

log = logging.getLogger(__name__)


def build_worker(settings: Settings, **overrides: Any) -> Runtime:
    """The runtime with every agent registered (``overrides`` go to :func:`build_runtime`)."""
    rt = build_runtime(settings, **overrides)
    consume_in_loop(rt.app)
    guard_redelivery(rt.app)
    run_before_revoke(rt.app, rt.before_revoke)
    deliver_without_tasks(rt.app)
    monitor.register(rt)
    DecideAgent.from_runtime(rt).register(rt)
    Ticker.register(rt)
    Scheduler.register(rt)
    DigestAgent.register(rt)
    sink.register(rt)
    return rt


def changelog_topics(rt: Runtime) -> dict[str, int]:
    """Every table's changelog topic and its partition count."""
    return {
        table.changelog_topic.get_topic_name(): table.partitions or rt.app.conf.topic_partitions
        for table in rt.app.tables.values()
    }


class QuietWorker(faust.Worker):
    """``faust.Worker`` without the terminal spinner, so the root logger keeps the configured level.

    At WARNING and above faust keeps its progress spinner and, to spin it on every
    record, adds a DEBUG handler and sets the root logger to DEBUG: every
    ``log.debug()`` in aiokafka/faust/mode then builds a LogRecord (measured ~27 µs
    of CPU per event). Here the spinner is dropped and the root level re-applied
    after faust has configured logging.
    """

    def __init__(self, *args: Any, before_stop: Sequence[Callable[[], Awaitable[None]]] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spinner = None
        self.before_stop = before_stop

    async def on_stop(self) -> None:
        """Run the agents' stop hooks before the app stops.

        faust's stop waits (``wait_empty``) for every record an agent has taken and not
        acknowledged. The sinks hold a record until its delivery settles, which with a
        receiver down is the whole retry schedule: without the hook a SIGTERM waited for it
        and ended in the supervisor's SIGKILL (agents.sink.register).
        """
        for hook in list(self.before_stop):
            try:
                await hook()
            except Exception:  # noqa: BLE001 - a hook that fails must not keep the worker from stopping
                log.exception("a stop hook failed; stopping anyway")
        await super().on_stop()

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        if level:
            logger.setLevel(level)


def make_faust_worker(rt: Runtime, settings: Settings, **kwargs: Any) -> QuietWorker:
    """The faust worker process object for ``rt`` (logging from ``settings``; ``kwargs`` to faust.Worker)."""
    return QuietWorker(
        rt.app,
        before_stop=rt.before_stop,
        loglevel=settings.log_level,
        quiet=True,
        logging_config=logging_config(settings.log_level, settings.log_format),
        **kwargs,
    )


GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Keep the cyclic garbage collector off the per-event path.

    Everything built at start-up (modules, the runbook set, the classifier's model, faust's
    app) lives as long as the process: ``gc.freeze`` moves it to the permanent generation,
    so no collection walks it again. The first generation's threshold goes from 700
    allocations to 20,000: a worker allocates a few hundred objects per event (decoded
    records, state copies, effects), nearly all freed by reference counting, so the default
    ran a young collection every couple of events. Measured on the bench's events through
    the decide agent's body: the collector's own time went from ~16 to ~2 µs per event.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


def run_worker(settings: Settings) -> int:
    register_secret_env()
    register_secrets(*settings.secret_values())
    note = sink.check_ledger(settings)  # refuses a ledger that cannot stop a second send (LedgerConfigError)
    if note:
        print(f"opsloop worker: warning: {note}", file=sys.stderr, flush=True)
    result = asyncio.run(apply(settings, load_catalogue(settings.topics_file)))
    for line in render(result).splitlines():
        print(f"opsloop worker: {line}", flush=True)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # the worker's own loop; faust binds to it
    rt = build_worker(settings, replication=result.replication)
    created = loop.run_until_complete(ensure_internal(settings, changelog_topics(rt), result.replication))
    if created:
        print(f"opsloop worker: created table changelogs {', '.join(created)}", flush=True)
    worker = make_faust_worker(rt, settings)
    tune_gc()
    worker.execute_from_commandline()  # returns only at shutdown (SIGTERM / SIGINT)
    return 0
