"""The remediation outcome events: their types and ids, shared by the sink that produces them
(``agents/sinks/outcomes.py``) and decide, which runs the step's policy (``streams/core/outcomes.py``)."""

from __future__ import annotations

from streams.model.records import derived_id

SUCCEEDED = "remediation.succeeded"
FAILED = "remediation.failed"  # the action answered an error status
DEAD = "remediation.dead"  # dead-lettered without an answer (refused before the call, unreachable)
TIMED_OUT = "remediation.timed_out"  # no answer within the timeout; the last attempt's fate unknown
FAILURE_TYPES = (FAILED, DEAD, TIMED_OUT)
OUTCOME_TYPES = (SUCCEEDED, *FAILURE_TYPES)


def outcome_event_id(effect_id: str) -> str:
    """The outcome event's id: one per remediate effect, so an outcome announced twice is a duplicate."""
    return derived_id("remediation-outcome", effect_id)
