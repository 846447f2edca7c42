"""The pure formatters: each payload passes the service's documented checks, limits trim, never reject."""

from __future__ import annotations

import json

import pytest

from agents.sinks.base import TRUNCATION_MARK, HttpResponse, PermanentError, TransientError
from agents.sinks.channels import pagerduty, registry, slack, teams, webhook
from streams.model.receivers import Receiver
from tests.sinks.fakes import validate_pagerduty, validate_slack, validate_teams
from tests.sinks.helpers import make_effect

SLACK = Receiver("infra-slack", "slack", {"mention_groups": ["S0123ABC", "S0456DEF"]}, {"webhook_url": "X"})
PD = Receiver("pd", "pagerduty", {}, {"routing_key": "X"})
KEY32 = "R0UT1NGKEY0123456789abcdefSECRET"


def huge_effect(channel: str, receiver: str) -> dict:
    return make_effect(
        receiver,
        channel,
        title="T" * 400,
        body="B" * 20_000,
        fields={f"label_{i:03d}": "v" * 3000 for i in range(600)},
        links=[{"label": f"Link {i} " + "x" * 100, "url": f"https://example.com/{i}"} for i in range(40)],
    )


def test_registry_has_every_channel_once() -> None:
    assert sorted(registry()) == ["email", "log", "pagerduty", "remediate", "slack", "teams", "webhook"]
    assert {c for c, s in registry().items() if s.idempotent} == {"pagerduty", "webhook", "log", "remediate"}


def test_slack_block_kit_payload_is_valid_and_complete() -> None:
    payload = slack.build_payload(make_effect("infra-slack", "slack"), SLACK)
    assert validate_slack(payload) == []
    blocks = payload["attachments"][0]["blocks"]
    assert [b["type"] for b in blocks] == ["header", "section", "section", "context", "actions"]
    assert payload["attachments"][0]["color"] == "#E01E5A"
    assert "<!subteam^S0123ABC> <!subteam^S0456DEF>" in blocks[1]["text"]["text"]
    assert payload["text"].startswith("<!subteam^S0123ABC>") and "[URGENT] Host out of memory" in payload["text"]
    assert [b["text"]["text"] for b in blocks[4]["elements"]] == ["Acknowledge", "Runbook", "Silence"]
    assert blocks[4]["elements"][0]["style"] == "primary"


def test_slack_alert_text_cannot_mention_the_channel_or_hide_a_link() -> None:
    """Found reading the payload from outside: the top-level ``text`` (mrkdwn, and what the notification shows)
    carried the alert's title unescaped, so a title "<!channel> ..." pinged the whole channel. Every piece of
    alert text is escaped as Slack asks (&, <, >); only the receiver's own mention groups stay mentions."""
    title = "<!channel> db down & <https://evil.example|open the runbook>"
    payload = slack.build_payload(make_effect("infra-slack", "slack", title=title, body=title), SLACK)
    blocks = payload["attachments"][0]["blocks"]
    mrkdwn = [payload["text"], *(b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b)]
    assert not [t for t in mrkdwn if "<!channel>" in t or "<https://evil" in t]
    assert blocks[0]["text"]["type"] == "plain_text"  # the header shows the title as it is: no mention there
    assert payload["text"] == (
        "<!subteam^S0123ABC> <!subteam^S0456DEF> [URGENT] "
        "&lt;!channel&gt; db down &amp; &lt;https://evil.example|open the runbook&gt;"
    )
    assert validate_slack(payload) == []


@pytest.mark.parametrize("severity, colour", [("info", "#439FE0"), ("warning", "#ECB22E"), ("action", "#E8912D")])
def test_slack_colour_by_severity_and_mentions_only_on_urgent(severity: str, colour: str) -> None:
    payload = slack.build_payload(make_effect("infra-slack", "slack", severity=severity), SLACK)
    assert payload["attachments"][0]["color"] == colour
    assert "subteam" not in json.dumps(payload)


def test_slack_over_limit_content_is_trimmed_with_a_marker_not_rejected() -> None:
    payload = slack.build_payload(huge_effect("slack", "infra-slack"), SLACK)
    assert validate_slack(payload) == []
    blocks = payload["attachments"][0]["blocks"]
    assert len(blocks) == 50
    assert blocks[0]["text"]["text"].endswith(TRUNCATION_MARK) and len(blocks[0]["text"]["text"]) == 150
    assert blocks[1]["text"]["text"].endswith(TRUNCATION_MARK) and len(blocks[1]["text"]["text"]) == 3000
    assert "more fields not shown" in json.dumps(blocks[-3])
    assert len(blocks[-1]["elements"]) == 25


def test_slack_resolve_is_an_update_message() -> None:
    # decide writes the resolve's title ("Resolved: ..."); the formatter adds no second prefix
    payload = slack.build_payload(
        make_effect("infra-slack", "slack", action="resolve", title="Resolved: Host out of memory"), SLACK
    )
    assert validate_slack(payload) == []
    header = payload["attachments"][0]["blocks"][0]["text"]["text"]
    assert header == ":white_check_mark: Resolved: Host out of memory" and ":white_check_mark:" in header
    assert "subteam" not in json.dumps(payload)


def test_slack_answer_other_than_ok_is_a_failure() -> None:
    slack.check(HttpResponse(200, {}, "ok"))
    with pytest.raises(PermanentError, match="invalid_token"):
        slack.check(HttpResponse(200, {}, "invalid_token"))
    with pytest.raises(TransientError) as err:
        slack.check(HttpResponse(429, {"retry-after": "7"}, "rate_limited"))
    assert err.value.retry_after == 7.0 and not err.value.breaker


def test_pagerduty_summary_is_never_empty() -> None:
    """PagerDuty answers 400 to an empty summary (the notice dead-lettered): a blank title names the session."""
    payload = pagerduty.build_event(make_effect("pd", "pagerduty", title="  "), PD, KEY32)
    assert validate_pagerduty(payload) == []
    assert payload["payload"]["summary"] == "opsloop: cluster-a/node-1/HostOutOfMemory"


def test_teams_adaptive_card_is_valid_and_fits_28kb() -> None:
    message = teams.build_message(make_effect("teams", "teams"))
    assert validate_teams(message, len(json.dumps(message).encode())) == []
    card = message["attachments"][0]["content"]
    assert card["version"] == "1.4"
    assert card["body"][-1]["type"] == "FactSet"
    assert {a["type"] for a in card["actions"]} == {"Action.OpenUrl"}
    big = teams.build_message(huge_effect("teams", "teams"))
    size = len(json.dumps(big, ensure_ascii=False).encode())
    assert size <= 28 * 1024 and validate_teams(big, size) == []
    assert TRUNCATION_MARK in json.dumps(big, ensure_ascii=False) or "more facts not shown" in json.dumps(big)


def test_teams_card_shows_alert_text_as_typed_not_as_markdown() -> None:
    """TextBlocks and facts render markdown in Teams: a title "[open the runbook](https://evil...)" was a link
    there, "**" bold and "- " a list. Alert text comes from whoever wrote the rule or posted the alert, so it is
    backslash-escaped (CommonMark); the card's own links stay actions."""
    title = "**db down** [open the runbook](https://evil.example) _now_"
    effect = make_effect("teams", "teams", title=title, body="- step one\n2. step `two`", fields={"a_b": "[x](y)"})
    message = teams.build_message(effect)
    assert validate_teams(message, len(json.dumps(message).encode())) == []
    card = message["attachments"][0]["content"]
    assert card["body"][0]["text"] == r"\*\*db down\*\* \[open the runbook\]\(https://evil.example\) \_now\_"
    assert card["body"][2]["text"] == "\\- step one\n2\\. step \\`two\\`"
    assert {"title": "a\\_b", "value": r"\[x\]\(y\)"} in card["body"][3]["facts"]
    assert all(a["url"].startswith("https://") and "\\" not in a["url"] for a in card["actions"])


def test_teams_card_of_the_longest_values_ingest_takes_is_cut_to_fit_not_refused() -> None:
    """Found by a formatter fuzz: label values and link URLs of 4,096 four-byte characters (what ingest takes)
    made a card no cut of the body and facts could fit, and the notice was dead-lettered. Each fact is
    trimmed, and the buttons go last, lowest rank first (a URL cannot be cut)."""
    huge = "💥" * 4096
    links = [{"label": f"Link {i}", "url": "https://example.com/" + huge} for i in range(3)]
    effect = make_effect("teams", "teams", fields={f"l{i}": huge for i in range(8)}, links=links)
    message = teams.build_message(effect)
    size = len(json.dumps(message, ensure_ascii=False).encode())
    assert size <= 28 * 1024 and validate_teams(message, size) == []
    card = message["attachments"][0]["content"]
    assert [a["title"] for a in card.get("actions", [])] == ["Link 0"]
    assert all(len(f["value"]) <= teams.FACT_VALUE_MAX for f in card["body"][-1]["facts"])


def test_teams_error_inside_a_200_body_is_that_error() -> None:
    teams.check(HttpResponse(202, {}, ""))
    with pytest.raises(TransientError) as err:
        teams.check(HttpResponse(200, {}, "Microsoft Teams endpoint returned HTTP error 429 with ContextId ..."))
    assert err.value.http_status == 429
    with pytest.raises(PermanentError):
        teams.check(
            HttpResponse(
                200, {}, "Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 413"
            )
        )


def test_pagerduty_trigger_event_is_valid() -> None:
    event = pagerduty.build_event(make_effect("pd", "pagerduty", thread_key="incident-42"), PD, KEY32)
    assert validate_pagerduty(event) == []
    assert event["event_action"] == "trigger" and event["dedup_key"] == "incident-42"
    assert event["payload"]["severity"] == "critical" and event["payload"]["source"] == "node-1:9100"
    assert event["payload"]["custom_details"]["value"] == "93.4"
    assert event["links"][0] == {"href": "https://opsloop.example.com/ack/1", "text": "Acknowledge"}


@pytest.mark.parametrize(
    "severity, expected", [("urgent", "critical"), ("action", "error"), ("warning", "warning"), ("info", "info")]
)
def test_pagerduty_severity_mapping(severity: str, expected: str) -> None:
    event = pagerduty.build_event(make_effect("pd", "pagerduty", severity=severity), PD, KEY32)
    assert event["payload"]["severity"] == expected


def test_pagerduty_limits_and_stable_dedup_key() -> None:
    long_key = "k" * 400
    a = pagerduty.build_event(make_effect("pd", "pagerduty", title="S" * 2000, thread_key=long_key), PD, KEY32)
    b = pagerduty.build_event(make_effect("pd", "pagerduty", action="resolve", thread_key=long_key), PD, KEY32)
    assert validate_pagerduty(a) == [] and validate_pagerduty(b) == []
    assert len(a["payload"]["summary"]) == 1024 and a["payload"]["summary"].endswith(TRUNCATION_MARK)
    assert a["dedup_key"] == b["dedup_key"] and len(a["dedup_key"]) <= 255
    assert b == {"routing_key": KEY32, "event_action": "resolve", "dedup_key": a["dedup_key"]}
    no_thread = pagerduty.build_event(make_effect("pd", "pagerduty", session_key="s/1"), PD, KEY32)
    assert no_thread["dedup_key"] == "s/1"


def test_pagerduty_400_is_permanent_and_202_success_is_required() -> None:
    pagerduty.check(HttpResponse(202, {}, '{"status":"success","dedup_key":"x"}'))
    with pytest.raises(PermanentError):
        pagerduty.check(HttpResponse(400, {}, '{"status":"invalid event"}'))
    with pytest.raises(TransientError):
        pagerduty.check(HttpResponse(503, {}, ""))


def test_webhook_is_the_effect_signed_with_hmac() -> None:
    effect = make_effect("hooks", "webhook", severity="warning", action="acknowledge")
    receiver = Receiver("hooks", "webhook", {"url": "https://h.example.com/x"}, {"signing_key": "K"})
    request = webhook.render(effect, receiver, {"signing_key": "s3cret-key"})
    assert json.loads(request.body) == effect
    assert webhook.verify("s3cret-key", request.body, request.headers[webhook.SIGNATURE_HEADER])
    assert not webhook.verify("other-key", request.body, request.headers[webhook.SIGNATURE_HEADER])
    assert request.headers["X-Event-Type"] == "opsloop.notify.acknowledge"
    assert request.headers["X-Severity"] == "warning"
    assert request.headers["Idempotency-Key"] == effect["effect_id"]
    assert "s3cret-key" not in repr(request)


def test_the_fake_validators_reject_what_the_services_reject() -> None:
    assert validate_slack({"blocks": [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}] * 51})
    assert validate_pagerduty(
        {
            "routing_key": KEY32,
            "event_action": "trigger",
            "payload": {"summary": "s", "source": "x", "severity": "urgent"},
        }
    )
    card = {
        "type": "message",
        "attachments": [
            {
                "contentType": teams.CONTENT_TYPE,
                "content": {
                    "type": "AdaptiveCard",
                    "version": "1.5",
                    "body": [{"type": "TextBlock", "text": "x"}],
                    "actions": [{"type": "Action.Submit", "title": "Ack"}],
                },
            }
        ],
    }
    problems = validate_teams(card, 100)
    assert any("1.4" in p for p in problems) and any("Action.Submit" in p for p in problems)
