"""A human action on a session (a signed link, a Slack button, the console) as the webhook event decide reads.

Pure: :mod:`streams.ingest.actions` (links, Slack) and :mod:`streams.ui` (the console)
both build their events here, so every way to acknowledge produces the same ``ack`` event.
"""

from __future__ import annotations

import json
from typing import Any

from streams.core.acklinks import ACTIONS, SILENCE_MS
from streams.core.messages import SESSION_LABEL
from streams.model.records import derived_id

# The label of an action's event that names the episode (the incident) its signed link was sent for.
EPISODE_LABEL = "episode"

EVENT_TYPES = {
    "ack": "ack",
    "approve": "remediation.approved",
    "reject": "remediation.rejected",
    "silence-1h": "silence.created",
    "silence-4h": "silence.created",
}


def action_event(
    *, action: str, session: str, org: str, actor: str, unique: str, now: int, via: str, episode: int | None = None
) -> dict[str, Any]:
    """The webhook event for a human action; ``unique`` (a link id, a Slack trigger id) gives its id, and
    ``episode`` (a signed link's) the incident it was sent for, which decide holds it to (label ``episode``)."""
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
        "labels": {"action": action, "via": via, **({} if episode is None else {EPISODE_LABEL: str(episode)})},
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
