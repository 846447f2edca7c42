"""Slack incoming webhook: Block Kit inside a coloured attachment, with a text fallback.

Limits Slack enforces (api.slack.com/reference/block-kit): ≤ 50 blocks, header
plain_text ≤ 150 characters, section text ≤ 3,000, ≤ 10 fields of ≤ 2,000 each,
≤ 25 elements in an actions block, button text ≤ 75 and url ≤ 3,000. Content over a
limit is trimmed with a visible marker, never rejected: a page that is cut short
beats one that is not sent. Incoming webhooks cannot edit a message, so an
acknowledge or resolve is rendered as a short update message. With the receiver
setting ``interactive: true`` a trigger carries Acknowledge / Silence 1h / Silence 4h
(and Approve / Reject while a remediation waits) buttons for the Slack app's
interactivity endpoint in ingest instead of the signed-link buttons.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agents.sinks.base import (
    SEVERITY_COLOURS,
    TRUNCATION_MARK,
    Channel,
    HttpRequest,
    HttpResponse,
    PermanentError,
    check_status,
    notify_of,
    trim,
)
from streams.model.linkepisode import link_episode
from streams.model.receivers import ChannelSpec, RateLimit, Receiver, SettingError

MAX_BLOCKS = 50
HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELDS_PER_SECTION = 10
FIELD_MAX = 2000
ACTIONS_MAX = 25
BUTTON_TEXT_MAX = 75
URL_MAX = 3000
CONTEXT_ELEMENTS_MAX = 10
FALLBACK_MAX = 3000
ACTION_EMOJI: dict[str, str | dict[str, str]] = {
    "trigger": {
        "urgent": ":rotating_light:",
        "action": ":warning:",
        "warning": ":warning:",
        "info": ":information_source:",
    },
    "acknowledge": ":eyes:",
    "resolve": ":white_check_mark:",
}


def _emoji(action: str, severity: str) -> str:
    emoji = ACTION_EMOJI.get(action, "")
    return emoji.get(severity, "") if isinstance(emoji, dict) else emoji


def _escape(text: str) -> str:
    """mrkdwn control characters (Slack asks for &, <, > to be escaped)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mentions(receiver: Receiver, severity: str, action: str) -> str:
    if severity != "urgent" or action != "trigger":
        return ""
    return " ".join(f"<!subteam^{group}>" for group in receiver.setting("mention_groups", []) or [])


# Buttons handled by ingest's /ingest/slack/interactivity (streams/ingest/slack.py): action id, text, style.
INTERACTIVE = (
    ("ack", "Acknowledge", "primary"),
    ("silence_1h", "Silence 1h", None),
    ("silence_4h", "Silence 4h", None),
)
APPROVAL_BUTTONS = (("approve", "Approve", "primary"), ("reject", "Reject", "danger"))
SIGNED_LINK_LABELS = ("Acknowledge", "Approve", "Reject")


def signed_episode(n: Mapping[str, Any]) -> int | None:
    """The episode (incident) the message's signed links name, if it has any.

    The buttons stand in for those links, so they name the same incident: an Approve button of
    an incident that has ended must not run the next incident's remediation. The notify record
    itself carries no episode; its signed links do (:mod:`streams.core.acklinks`)."""
    for link in n.get("links") or []:
        if link.get("label") in SIGNED_LINK_LABELS:
            episode = link_episode(str(link.get("url") or ""))
            if episode is not None:
                return episode
    return None


def interactive_buttons(effect: Mapping[str, Any], n: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Block Kit buttons whose value names the session and the incident (:func:`signed_episode`); Approve /
    Reject while a remediation waits (decide adds an Approve link then)."""
    target: dict[str, Any] = {"session": effect["session_key"], "org": effect.get("org", "")}
    episode = signed_episode(n)
    if episode is not None:
        target["episode"] = episode
    value = json.dumps(target, separators=(",", ":"))
    specs = list(INTERACTIVE)
    if any(link["label"] == "Approve" for link in n.get("links") or []):
        specs[1:1] = APPROVAL_BUTTONS
    buttons = []
    for action_id, text, style in specs:
        button: dict[str, Any] = {
            "type": "button",
            "action_id": action_id,
            "value": value,
            "text": {"type": "plain_text", "text": text, "emoji": True},
        }
        if style:
            button["style"] = style
        buttons.append(button)
    return buttons


def build_payload(effect: Mapping[str, Any], receiver: Receiver) -> dict[str, Any]:
    """The webhook JSON for a notify effect (pure)."""
    n = notify_of(effect)
    severity, action = n["severity"], n.get("action") or "trigger"
    title = n["title"]
    header_text = trim(f"{_emoji(action, severity)} {title}".strip(), HEADER_MAX)
    mentions = _mentions(receiver, severity, action)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header_text, "emoji": True}}
    ]
    body = _escape(n.get("body") or "")
    if mentions:
        body = f"{mentions} {body}".strip()
    if body:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": trim(body, SECTION_TEXT_MAX)}})
    fields = (
        [
            {"type": "mrkdwn", "text": trim(f"*{_escape(k)}*\n{_escape(v)}", FIELD_MAX)}
            for k, v in (n.get("fields") or {}).items()
        ]
        if action == "trigger"
        else []
    )
    tail = 2  # context + actions always fit
    room = MAX_BLOCKS - len(blocks) - tail
    chunks = [fields[i : i + FIELDS_PER_SECTION] for i in range(0, len(fields), FIELDS_PER_SECTION)]
    if len(chunks) > room:
        kept = chunks[:room]
        dropped = sum(len(c) for c in chunks[room:])
        kept[-1] = kept[-1][: FIELDS_PER_SECTION - 1] + [
            {"type": "mrkdwn", "text": f"{TRUNCATION_MARK} {dropped + 1} more fields not shown"}
        ]
        chunks = kept
    blocks.extend({"type": "section", "fields": chunk} for chunk in chunks)
    context = [f"*{severity.upper()}*", f"session `{_escape(effect['session_key'])}`"]
    if effect.get("runbook"):
        context.append(f"runbook `{_escape(effect['runbook'])}`")
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": trim(text, SECTION_TEXT_MAX)} for text in context[:CONTEXT_ELEMENTS_MAX]
            ],
        }
    )
    interactive = bool(receiver.setting("interactive")) and action == "trigger"
    buttons = interactive_buttons(effect, n) if interactive else []
    for i, link in enumerate((n.get("links") or [])[: ACTIONS_MAX - len(buttons)]):
        if interactive and link["label"] in SIGNED_LINK_LABELS:
            continue  # the interactive button does the same without leaving Slack
        if len(link["url"]) > URL_MAX:
            continue  # a cut URL would lead somewhere wrong; the fallback text still names it
        button = {
            "type": "button",
            "action_id": f"link-{i}",
            "url": link["url"],
            "text": {"type": "plain_text", "text": trim(link["label"], BUTTON_TEXT_MAX), "emoji": True},
        }
        if link["label"].lower().startswith("acknowledge"):
            button["style"] = "primary"
        buttons.append(button)
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    fallback = f"[{severity.upper()}] {title}"  # plain text: shown as it is
    # the top-level text is mrkdwn (and what a notification shows): an alert's "<!channel>" pinged the channel
    text = f"[{severity.upper()}] {_escape(title)}"
    if mentions:
        fallback, text = f"{mentions} {fallback}", f"{mentions} {text}"
    payload: dict[str, Any] = {
        "text": trim(text, FALLBACK_MAX),
        "attachments": [
            {
                "color": SEVERITY_COLOURS.get(severity, "#999999"),
                "blocks": blocks,
                "fallback": trim(fallback, FALLBACK_MAX),
            }
        ],
    }
    for key in ("username", "icon_emoji"):
        if receiver.setting(key):
            payload[key] = receiver.setting(key)
    return payload


def render(effect: Mapping[str, Any], receiver: Receiver, secrets: Mapping[str, str]) -> HttpRequest:
    body = json.dumps(build_payload(effect, receiver), ensure_ascii=False).encode()
    return HttpRequest(url=secrets["webhook_url"], body=body, headers={"content-type": "application/json"})


def check(response: HttpResponse) -> None:
    """Slack answers ``ok``; a 200 with anything else is a failure, not a delivery."""
    check_status(response)
    if response.text.strip() != "ok":
        raise PermanentError(
            f"Slack answered {response.status} with {response.text[:200]!r} instead of 'ok'",
            http_status=response.status,
        )


def check_settings(settings: Mapping[str, Any], secrets: Mapping[str, Any]) -> None:
    """A receiver's values, checked at load (a bad one would only fail on the first page)."""
    if "mention_groups" in settings:
        groups = settings["mention_groups"]
        if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
            raise SettingError("mention_groups", "must be a list of Slack user-group ids like S0123ABC")
    if "interactive" in settings and not isinstance(settings["interactive"], bool):
        raise SettingError("interactive", "must be true or false")


# The default rate follows Slack's documented limit: about one message per second per incoming webhook.
SPEC = ChannelSpec(
    required=("webhook_url",),
    secret_only=("webhook_url",),
    # interactive: true adds Acknowledge / Silence / Approve / Reject buttons that post to
    # ingest's /ingest/slack/interactivity (the Slack app's Request URL; see README).
    optional=("mention_groups", "username", "icon_emoji", "interactive"),
    default_rate=RateLimit(1, 1.0),
    check_settings=check_settings,
)

CHANNEL = Channel(name="slack", spec=SPEC, render=render, check=check, idempotent=False)
