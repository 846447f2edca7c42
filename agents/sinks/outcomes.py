"""A settled remediation goes back to its session as an event (the pure half is here).

After the dispatcher settles a live ``remediate`` effect it hands the outcome to
:func:`outcome_event`, and the worker appends the result to ``events.webhook`` keyed
by the session, where decide runs the step's ``on_failure`` / ``then``
(:mod:`streams.core.outcomes`):

==========================  ==============================================================
``remediation.succeeded``   the action answered 2xx
``remediation.failed``      it answered an error status (4xx, or 5xx until the retries ran out)
``remediation.timed_out``   the last attempt got no answer within the timeout (fate unknown)
``remediation.dead``        dead-lettered without an answer: refused before the call (no
                            endpoint, a missing secret) or unreachable
==========================  ==============================================================

The event id derives from the effect id (:func:`streams.model.outcomes.outcome_event_id`),
so an outcome announced twice (a redelivered outbox record the ledger answers) is a
duplicate at decide. Dry runs announce nothing: nothing happened.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agents.sinks.delivery import Outcome
from streams.model.outcomes import DEAD, FAILED, SUCCEEDED, TIMED_OUT, outcome_event_id

SOURCE = "opsloop"
TIMEOUT_ERRORS = ("AmbiguousError",)


def outcome_type(status: str, *, http_status: int | None = None, error_type: str = "") -> str | None:
    """The event type of a settled remediation (None: nothing to announce, a dry run)."""
    if status == "delivered":
        return SUCCEEDED
    if status in ("dry_run", "skipped", "conflict", "ignored"):
        return None
    if status == "ambiguous" or error_type in TIMEOUT_ERRORS:
        return TIMED_OUT
    if http_status is not None and http_status >= 400:
        return FAILED
    return DEAD


def outcome_event(effect: Mapping[str, Any], etype: str, outcome: Outcome, *, now_ms: int) -> dict[str, Any]:
    """The ``opsloop.Event`` (webhook kind) that tells the effect's session how its remediation ended."""
    r = effect["remediate"]
    body = {
        "action": r["action"],
        "effect_id": effect["effect_id"],
        "event_id": effect["event_id"],
        "runbook": effect.get("runbook", ""),
        "status": outcome.status,
        "attempts": outcome.attempts,
        "http_status": outcome.http_status,
        "reason": outcome.error or "",  # already redacted by the delivery client
    }
    return {
        "event_id": outcome_event_id(effect["effect_id"]),
        "session_key": effect["session_key"],
        "session_rule": "remediation",
        "kind": "webhook",
        "type": etype,
        "source": SOURCE,
        "org": effect.get("org", "default"),
        # Event time: when the outcome was known, never before the effect that asked for it.
        "occurred_at": max(int(now_ms), int(effect["created_at"])),
        "received_at": int(now_ms),
        "labels": {},
        "annotations": {},
        "payload": {
            "provider": SOURCE,
            "action": etype.removeprefix("remediation."),
            "delivery_id": effect["effect_id"],
            "subject": r["action"],
            "url": "",
            "actor": "opsloop-sink",
            "body_json": json.dumps(body, sort_keys=True, separators=(",", ":")),
        },
    }
