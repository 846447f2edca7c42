"""Ingest's Prometheus metrics, served on its own ``/metrics``.

One registry per application (not the process-global one) so tests can build
several apps in one process and a scrape shows only this ingest's series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "opsloop_ingest_requests",
            "HTTP posts by endpoint and answer status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.events = Counter(
            "opsloop_ingest_events",
            "Events by endpoint and outcome (accepted: written and acknowledged; duplicate: already accepted; ignored;"
            " refused: an alert of a post taken in part).",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "opsloop_ingest_publish_seconds",
            "Time from handing a post's events to Kafka to its acknowledgement.",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.in_flight = Gauge(
            "opsloop_ingest_in_flight_events", "Events waiting for Kafka's acknowledgement.", registry=self.registry
        )
