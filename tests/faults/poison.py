"""Poison for the fault harness: raw records for events.telemetry (each must end in events.dlq with its
reason) and an event the classifier raises on."""

from __future__ import annotations

from typing import Any

from streams.kafka.codec import default_codec
from tests.decide.helpers import alert
from tests.faults.harness import T0


def undecodable() -> tuple[str, bytes]:
    return "undecodable bytes", b"\x00not avro at all \xff\xfe"


def unknown_schema() -> tuple[str, bytes]:
    """The single-object marker with a fingerprint no schema has."""
    return "unknown schema", b"\xc3\x01" + bytes.fromhex("0badf00d0badf00d") + b"\x02\x00"


def impossible_values() -> tuple[str, bytes]:
    """Valid Avro for opsloop.Event, at the end of time (past the year 9999: decide refuses it)."""
    far = 2**63 - 1
    event = alert("HostHighCpuLoad", at=far, instance="poison-1:9100", service="poison", session="acme:poison")
    return "valid Avro, impossible values", default_codec().encode("opsloop.Event", event)


def all_poison() -> list[tuple[str, bytes]]:
    return [undecodable(), unknown_schema(), impossible_values()]


def classifier_poison() -> list[dict[str, Any]]:
    """A well-formed alert in a session of its own, which the faulty worker's classifier raises on
    (``Run.mark`` labels it): decided by the keyword rules, flagged ``fallback``, nothing lost."""
    return [
        alert(
            "HostHighCpuLoad",
            at=T0 + 90_000,
            instance="classifier-poison-1:9100",
            service="classifier-poison",
            session="acme:alert:HostHighCpuLoad:classifier-poison",
        )
    ]
