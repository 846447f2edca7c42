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

from streams.core.actions import EVENT_TYPES, action_event
from streams.ingest.scopes import Principal, webhook_principal

__all__ = ["DONE", "EVENT_TYPES", "WILL", "action_event", "action_principal"]

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


def action_principal(via: str) -> Principal:
    """Who a message's action produces as: ``link`` (a signed link) or ``slack`` (a signed button click),
    allowed only the action events, in any org the signed request names (the signature binds it)."""
    return webhook_principal(via, tuple(EVENT_TYPES.values()))
