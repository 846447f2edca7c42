"""Serves /metrics on the worker's web port and samples consumer lag.

Lag is measured where it is owned: every few seconds each worker compares its
position with the end offset of each partition assigned to it. Only catalogue
topics are reported (faust's changelog topics are recovery plumbing).
"""

from __future__ import annotations

import logging

import faust

from agents.runtime import Runtime
from streams import metrics

log = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 5.0


def logical_topic(rt: Runtime, physical: str) -> str | None:
    prefix = rt.settings.topic_prefix
    name = physical[len(prefix) :] if prefix and physical.startswith(prefix) else physical
    return name if name in rt.specs else None


async def sample_lag(rt: Runtime) -> None:
    consumer = rt.app.consumer
    tps = [tp for tp in consumer.assignment() if logical_topic(rt, tp.topic)]
    counts: dict[str, int] = {}
    if tps:
        highwaters = await consumer.highwaters(*tps)
        for tp in tps:
            topic = logical_topic(rt, tp.topic)
            assert topic is not None  # tps holds only the catalogue's topics
            position = await consumer.position(tp)
            end = highwaters.get(tp)
            counts[topic] = counts.get(topic, 0) + 1
            if position is None or end is None:
                continue
            metrics.CONSUMER_POSITION.labels(topic, str(tp.partition)).set(position)
            metrics.CONSUMER_LAG.labels(topic, str(tp.partition)).set(max(end - position, 0))
    for topic in rt.specs:
        metrics.PARTITIONS_ASSIGNED.labels(topic).set(counts.get(topic, 0))


def register(rt: Runtime) -> None:
    app = rt.app

    @app.page("/metrics")
    async def metrics_page(web_view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        body, _ = metrics.render()
        # aiohttp takes the charset separately; this is Prometheus's text format 0.0.4.
        return web_view.bytes(body, content_type="text/plain; version=0.0.4")

    @app.timer(interval=SAMPLE_INTERVAL_S)  # type: ignore[untyped-decorator]  # faust's App.timer is annotated as returning a bare Callable
    async def lag_sampler() -> None:
        try:
            await sample_lag(rt)
        except Exception:  # a metadata hiccup must not stop the worker; the next tick retries
            log.warning("lag sampling failed", exc_info=True)
