"""The faust app's table changelog topics, created before a worker starts.

faust creates changelog topics while it starts, racing its own assignor: a GlobalTable whose
changelog does not exist yet is skipped ("Ignoring missing topic"), and recovery then waits
for it forever (about one worker start in four here). Creating them first takes the race away.
"""

from __future__ import annotations

import asyncio

from streams.settings import Settings


def create_changelog_topics(settings: Settings) -> None:
    """Create the worker's table changelogs (compacted, one replica); existing ones are left alone."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    from agents.worker import build_worker, changelog_topics

    wanted = changelog_topics(build_worker(settings, replication=1))

    async def create() -> None:
        admin = AIOKafkaAdminClient(**settings.kafka_client_config())
        await admin.start()
        try:
            for name, partitions in wanted.items():
                try:
                    await admin.create_topics(
                        [NewTopic(name, partitions, 1, topic_configs={"cleanup.policy": "compact"})]
                    )
                except TopicAlreadyExistsError:
                    pass
        finally:
            await admin.close()

    asyncio.run(create())
