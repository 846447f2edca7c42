"""``opsloop worker``: ensure the topics exist, then run the faust worker.

Workers scale out by joining one consumer group (the app id); Kafka spreads the
partitions and faust moves table state through the changelog topics.
"""

from __future__ import annotations

import asyncio
import logging

import faust

from streams.app import create_app
from streams.logs import logging_config, register_secret_env, register_secrets
from streams.settings import Settings
from streams.topics import load_catalogue
from streams.topics_admin import apply, ensure_internal, render

log = logging.getLogger(__name__)


def changelog_topics(ops) -> dict[str, int]:
    """Every table's changelog topic and its partition count."""
    return {
        table.changelog_topic.get_topic_name(): table.partitions or ops.app.conf.topic_partitions
        for table in ops.app.tables.values()
    }


def run_worker(settings: Settings) -> int:
    register_secret_env()
    register_secrets(*settings.secret_values())
    result = asyncio.run(apply(settings, load_catalogue(settings.topics_file)))
    for line in render(result).splitlines():
        print(f"opsloop worker: {line}", flush=True)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # the worker's own loop; faust binds to it
    ops = create_app(settings, replication=result.replication)
    created = loop.run_until_complete(ensure_internal(settings, changelog_topics(ops), result.replication))
    if created:
        print(f"opsloop worker: created table changelogs {', '.join(created)}", flush=True)
    worker = faust.Worker(
        ops.app, loglevel=settings.log_level, quiet=True,
        logging_config=logging_config(settings.log_level, settings.log_format),
    )
    worker.execute_from_commandline()  # returns only at shutdown (SIGTERM / SIGINT)
    return 0
