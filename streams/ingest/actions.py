"""Human actions on a session (a signed link, a Slack button) → the webhook event decide reads.

One place turns "``actor`` did ``action`` to ``session``" into an opsloop event, so an
Acknowledge link and a Slack button produce the same ``ack`` event, and both go
through the one produce path (:meth:`streams.ingest.pipeline.Ingest.finish` /
``accept``). The event id is derived from what makes the action unique (a link's id,
a Slack action's trigger id), so a second POST is a duplicate event: ingest answers
"already used" and decide skips it even after an ingest restart.

==============  ==============================  =====================================
action          event type                      effect in decide
==============  ==============================  =====================================
ack             ``ack``                         stops the escalation chain, tells PagerDuty
approve         ``remediation.approved``        runs the remediation waiting for approval
reject          ``remediation.rejected``        drops it
silence-1h/4h   ``silence.created``             mutes the session (``opsloop_session``) from now
==============  ==============================  =====================================
"""

from __future__ import annotations

import json
from typing import Any

from streams.core.acklinks import ACTIONS, SILENCE_MS
from streams.core.messages import SESSION_LABEL
from streams.ingest.scopes import Principal, webhook_principal
from streams.model.records import derived_id

EVENT_TYPES = {
    "ack": "ack",
    "approve": "remediation.approved",
    "reject": "remediation.rejected",
    "silence-1h": "silence.created",
    "silence-4h": "silence.created",
}
# What a page or a chat update says before ("This will ...") and after ("... <session>").
WILL = {
    "ack": "acknowledge",
    "approve": "approve the remediation waiting in",
    "reject": "reject the remediation waiting in",
    "silence-1h": "silence for 1 hour",
    "silence-4h": "silence for 4 hours",
}
DONE = {
    "ack": "Acknowledged",
    "approve": "Approved the remediation of",
    "reject": "Rejected the remediation of",
    "silence-1h": "Silenced for 1 hour:",
    "silence-4h": "Silenced for 4 hours:",
}


def action_event(*, action: str, session: str, org: str, actor: str, unique: str, now: int, via: str) -> dict[str, Any]:
    """The webhook event for a human action; ``unique`` (a link id, a Slack trigger id) gives its id."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    body: dict[str, Any] = {"action": action, "via": via}
    subject = session
    if action in SILENCE_MS:
        silence_id = derived_id("silence", via, unique)
        body = {
            "id": silence_id,
            "matchers": [f'{SESSION_LABEL}="{_quote(session)}"'],
            "starts_at": now,
            "ends_at": now + SILENCE_MS[action],
            "created_by": actor,
            "comment": f"{action} from {via}",
        }
        subject = silence_id
    return {
        "event_id": derived_id(via, unique, action),
        "session_key": session,
        "session_rule": via,
        "kind": "webhook",
        "type": EVENT_TYPES[action],
        "source": "opsloop",
        "org": org,
        "occurred_at": now,
        "received_at": now,
        "labels": {"action": action, "via": via},
        "annotations": {},
        "payload": {
            "provider": "opsloop",
            "action": action,
            "delivery_id": unique,
            "subject": subject,
            "url": "",
            "actor": actor,
            "body_json": json.dumps(body, sort_keys=True),
        },
    }


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def action_principal(via: str) -> Principal:
    """Who a message's action produces as: ``link`` (a signed link) or ``slack`` (a signed button click),
    allowed only the action events, in any org the signed request names (the signature binds it)."""
    return webhook_principal(via, tuple(EVENT_TYPES.values()))
