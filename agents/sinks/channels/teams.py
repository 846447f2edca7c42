"""Microsoft Teams (Workflows webhook): a message carrying an Adaptive Card 1.4.

Teams renders cards up to schema 1.4 in webhooks, allows no Action.Submit there
(nothing could receive it), and rejects messages over about 28 KB. The card keeps
to that: FactSet for the fields, Action.OpenUrl for links, and when the JSON is
too big the body text, then the facts, are cut with a visible marker. TextBlocks
and facts render markdown, so alert text is backslash-escaped there (a title
``[open](https://evil.example)`` shows as typed, not as a link). Teams
sometimes answers 200 with the error in the body ("... HTTP error 429 ..."); that
is treated as the error it reports.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from agents.sinks.base import (
    TRUNCATION_MARK,
    Channel,
    HttpRequest,
    HttpResponse,
    PermanentError,
    TransientError,
    check_status,
    notify_of,
    parse_retry_after,
    trim,
)
from streams.model.receivers import ChannelSpec, RateLimit, Receiver

CARD_VERSION = "1.4"
MAX_BYTES = 28 * 1024
TITLE_MAX = 1000
FACT_TITLE_MAX = 200  # a label name is at most 128 (ingest); a button's title is shorter still to be read
FACT_VALUE_MAX = 2000  # as Slack's field; a label value may be 4,096 characters
CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
TITLE_COLOUR = {"urgent": "Attention", "action": "Warning", "warning": "Warning", "info": "Accent"}
# CommonMark's backslash escapes for what Adaptive Cards' markdown reads: emphasis, links, code, lists, headings.
_MARKDOWN = re.compile(r"([\\`*_\[\]()~#>!|])")
_LIST_MARKER = re.compile(r"^(\s*\d*)([-+.)])(?=\s|$)", re.MULTILINE)  # "- x", "+ x", "1. x", "2) x"
_BODY_ERROR = re.compile(r"(?:HTTP error|\"statusCode\"\s*:|\"code\"\s*:)\s*\"?(\d{3})")


def escape(text: str) -> str:
    """Alert text shown as typed: it comes from whoever wrote the rule or posted the alert (pure)."""
    return _LIST_MARKER.sub(r"\1\\\2", _MARKDOWN.sub(r"\\\1", text))


def build_card(
    effect: Mapping[str, Any],
    body_limit: int | None = None,
    facts_limit: int | None = None,
    actions_limit: int | None = None,
) -> dict[str, Any]:
    n = notify_of(effect)
    severity, action = n["severity"], n.get("action") or "trigger"
    title = escape(trim(n["title"], TITLE_MAX))
    colour = "Good" if action == "resolve" else TITLE_COLOUR.get(severity, "Default")
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Large", "wrap": True, "color": colour},
        {
            "type": "TextBlock",
            "text": f"{severity.upper()} · session {escape(effect['session_key'])}",
            "isSubtle": True,
            "spacing": "None",
            "wrap": True,
        },
    ]
    text = n.get("body") or ""
    if text:
        body.append(
            {
                "type": "TextBlock",
                "text": escape(trim(text, body_limit) if body_limit is not None else text),
                "wrap": True,
            }
        )
    facts = [
        {"title": escape(trim(k, FACT_TITLE_MAX)), "value": escape(trim(v, FACT_VALUE_MAX))}
        for k, v in (n.get("fields") or {}).items()
    ]
    if effect.get("runbook") and "runbook" not in (n.get("fields") or {}):  # effects written before 3 had it in fields
        facts.append({"title": "runbook", "value": escape(effect["runbook"])})
    if facts_limit is not None and len(facts) > facts_limit:
        facts = facts[:facts_limit] + [{"title": "…", "value": f"{len(facts) - facts_limit} more facts not shown"}]
    if facts:
        body.append({"type": "FactSet", "facts": facts})
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "msteams": {"width": "Full"},
        "body": body,
    }
    links = (n.get("links") or [])[:actions_limit]
    actions = [
        {"type": "Action.OpenUrl", "title": trim(link["label"], FACT_TITLE_MAX), "url": link["url"]} for link in links
    ]
    if actions:
        card["actions"] = actions
    return card


def build_message(effect: Mapping[str, Any]) -> dict[str, Any]:
    """The Workflows message, cut to fit under 28 KB (pure)."""

    def wrap(card: dict[str, Any]) -> dict[str, Any]:
        return {"type": "message", "attachments": [{"contentType": CONTENT_TYPE, "contentUrl": None, "content": card}]}

    message = wrap(build_card(effect))
    size = len(json.dumps(message, ensure_ascii=False).encode())
    if size <= MAX_BYTES:
        return message
    text = notify_of(effect).get("body") or ""
    # Cut the body by the overshoot (bytes ≥ characters), then the facts, until it fits.
    body_limit = max(len(TRUNCATION_MARK), len(text) - (size - MAX_BYTES) - 256)
    facts_limit: int | None = None
    actions_limit: int | None = None
    while True:
        message = wrap(build_card(effect, body_limit=body_limit, facts_limit=facts_limit, actions_limit=actions_limit))
        size = len(json.dumps(message, ensure_ascii=False).encode())
        if size <= MAX_BYTES:
            return message
        if body_limit > 200:
            body_limit = body_limit // 2
        elif facts_limit != 0:
            facts_limit = (len(notify_of(effect).get("fields") or {}) if facts_limit is None else facts_limit) // 2
        elif actions_limit != 0:
            # the buttons last, the one of lowest rank first (a URL cannot be cut and still lead anywhere)
            links = len(notify_of(effect).get("links") or [])
            actions_limit = max(0, (links if actions_limit is None else actions_limit) - 1)
        else:
            raise PermanentError(f"Teams card is {size} bytes even without body, facts and buttons (limit {MAX_BYTES})")


def render(effect: Mapping[str, Any], receiver: Receiver, secrets: Mapping[str, str]) -> HttpRequest:
    body = json.dumps(build_message(effect), ensure_ascii=False).encode()
    return HttpRequest(url=secrets["webhook_url"], body=body, headers={"content-type": "application/json"})


def check(response: HttpResponse) -> None:
    check_status(response)
    match = _BODY_ERROR.search(response.text or "")
    if not match:
        return
    status = int(match.group(1))
    if 200 <= status < 300:
        return
    reason = f"Teams answered {response.status} reporting HTTP {status}: {response.text[:200]}"
    if status == 429:
        raise TransientError(
            reason,
            http_status=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            breaker=False,
        )
    if status == 408 or status >= 500:
        raise TransientError(reason, http_status=status)
    raise PermanentError(reason, http_status=status)


SPEC = ChannelSpec(required=("webhook_url",), secret_only=("webhook_url",), default_rate=RateLimit(4, 1.0))

CHANNEL = Channel(name="teams", spec=SPEC, render=render, check=check, idempotent=False)
