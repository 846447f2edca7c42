"""Alertmanager's silence API on a real ``opsloop ingest``, driven by Debian's real ``amtool``.

``amtool silence add`` / ``expire`` against ingest's ``POST /api/v2/silences`` and ``DELETE
/api/v2/silence/{id}``: the events they produce (what ``opsloop silence`` produces), the token's scope
(control to write one, operator to cover more than its own org), and refusals as Alertmanager answers them
(the reason as a JSON string, which amtool prints).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.ingest.conftest import TOKENS, IngestServer, bearer, read_events, scoped_ingest

pytestmark = pytest.mark.integration

SCOPES = {
    "prometheus": {"orgs": ["*"], "control": True, "operator": True},  # an operator's token
    "alertmanager": {"orgs": ["a"], "control": True},  # one org's on-call token
    "scanner": {"orgs": ["a"]},  # no control
}


@pytest.fixture(scope="module")
def server(kafka_bootstrap, tmp_path_factory):
    with scoped_ingest(kafka_bootstrap, SCOPES, tmp_path_factory.mktemp("silences")) as served:
        yield served


def amtool(server: IngestServer, token: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    config = tmp_path / f"{token}.yml"
    config.write_text(f"authorization:\n  type: Bearer\n  credentials: {TOKENS[token]}\n")
    return subprocess.run(
        ["amtool", f"--alertmanager.url={server.url('')}", f"--http.config.file={config}", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def body_of(settings, silence_id: str, etype: str) -> tuple[dict, dict]:
    """The event of type ``etype`` about ``silence_id`` on events.webhook, and its decoded body."""

    def found(records):
        return [r.value for r in records if r.value and r.value["type"] == etype and silence_id in str(r.value)]

    (event,) = found(read_events(settings, lambda rs: bool(found(rs)), topics=["events.webhook"]))
    return event, json.loads(event["payload"]["body_json"])


def test_amtool_adds_and_expires_silences_within_the_tokens_scope(server, tmp_path):
    ingest, settings = server
    tag = uuid.uuid4().hex[:6]

    # an org's on-call token: its silence covers its own org only, whatever the matchers say
    added = amtool(ingest, "alertmanager", tmp_path, "silence", "add", f"service=db-{tag}", 'alertname=~"Db.*"',
                   "--duration=1h", "--comment=maintenance", "--author=alice")  # fmt: skip
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.strip()
    event, body = body_of(settings, silence_id, "silence.created")
    assert event["org"] == "a" and event["session_key"] == "a:silences"
    assert body["id"] == silence_id and body["created_by"] == "alice" and body["comment"] == "maintenance"
    assert body["matchers"] == [f'service="db-{tag}"', 'alertname=~"Db.*"', 'org="a"'] and body["org"] == "a"
    assert 3_590_000 < body["ends_at"] - body["starts_at"] <= 3_600_000  # a start in the past is ingest's now

    # an operator's token: as written, in the org its org matcher names
    wide = amtool(ingest, "prometheus", tmp_path, "silence", "add", "org=b", f"service!=web-{tag}", "--duration=2h",
                  "--comment=b web")  # fmt: skip
    assert wide.returncode == 0, wide.stderr
    event, body = body_of(settings, wide.stdout.strip(), "silence.created")
    assert event["org"] == "b" and body["matchers"] == ['org="b"', f'service!="web-{tag}"'] and "org" not in body

    # outside the scope: another org, or no control at all; amtool fails and prints the status
    other = amtool(ingest, "alertmanager", tmp_path, "silence", "add", "org=b", f"service=x-{tag}", "--comment=x")
    assert other.returncode != 0 and "403" in other.stderr
    assert amtool(ingest, "scanner", tmp_path, "silence", "add", f"service=y-{tag}", "--comment=y").returncode != 0

    expired = amtool(ingest, "alertmanager", tmp_path, "silence", "expire", silence_id)
    assert expired.returncode == 0, expired.stderr
    event, body = body_of(settings, silence_id, "silence.expired")
    assert event["org"] == "a" and body == {"id": silence_id, "org": "a"}  # decide ends only org a's own


def test_bad_silences_are_refused_as_alertmanager_refuses_them(server, http):
    ingest, settings = server
    now = datetime.now(UTC)
    good = {
        "matchers": [{"name": "service", "value": "db", "isRegex": False, "isEqual": True}],
        "startsAt": (now - timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
        "endsAt": (now + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
        "createdBy": "ops",
        "comment": f"c-{uuid.uuid4().hex[:6]}",
    }
    url = ingest.url("/api/v2/silences")
    cases = [
        ({**good, "matchers": []}, "matchers: required, at least one"),
        ({**good, "endsAt": (now - timedelta(minutes=1)).isoformat()}, "endsAt: in the past"),
        ({**good, "matchers": [{"name": "service", "value": "db", "isRegex": "yes"}]}, "matchers[0].isRegex: expected"),
        ({**good, "matchers": [{"name": "a-b", "value": "x"}]}, "matchers[0]: invalid label name 'a-b'"),
        ({**good, "matchers": [{"name": "s", "value": "(?=x)", "isRegex": True}]}, "matchers[0]:"),
        ({**good, "matchers": [{"name": "s", "value": ".*", "isRegex": True}]}, "a silence must select something"),
        ({**good, "startsAt": "yesterday"}, "startsAt: not an ISO 8601 time"),
        (
            {**good, "matchers": [{"name": "a", "value": "x" * 5000}]},
            "matchers[0].value: 5000 characters; at most 4096",
        ),
        ({**good, "id": "a\u0007b"}, "id: a silence id: 1-128 characters, no control characters"),
        # as Alertmanager: service!="web" alone would mute every other service's alerts, and those without one
        ({**good, "matchers": [{"name": "service", "value": "web", "isEqual": False}]}, "must not match an empty"),
    ]
    for body, reason in cases:
        answer = http.post(url, json=body, headers=bearer("prometheus"))
        assert answer.status_code == 400, (body, answer.text)
        assert isinstance(answer.json(), str) and reason in answer.json(), answer.text  # Alertmanager's error body
    bad_id = http.delete(ingest.url("/api/v2/silence/a%00b"), headers=bearer("prometheus"))
    assert bad_id.status_code == 400 and "silenceID: a silence id" in bad_id.json()
    assert http.post(url, json=good).status_code == 401
    assert http.post(url, json=good, headers=bearer("scanner")).status_code == 403

    good["startsAt"] = (now + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")  # else it starts at ingest's now
    first = http.post(url, json=good, headers=bearer("prometheus"))
    again = http.post(url, json=good, headers=bearer("prometheus"))  # a retry: the same silence, one event
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    silence_id = first.json()["silenceID"]
    # an update (amtool silence update: the same id, a new end) is a new event, not a duplicate of the first
    longer = {**good, "id": silence_id, "endsAt": (now + timedelta(hours=3)).isoformat().replace("+00:00", "Z")}
    assert http.post(url, json=longer, headers=bearer("prometheus")).json() == {"silenceID": silence_id}

    def created(records):
        return [
            r.value for r in records if r.value and r.value["type"] == "silence.created" and silence_id in str(r.value)
        ]

    events = read_events(settings, lambda rs: len(created(rs)) >= 2, topics=["events.webhook"])
    ends = sorted(json.loads(e["payload"]["body_json"])["ends_at"] for e in created(events))
    assert len(ends) == 2 and ends[1] - ends[0] == 2 * 3_600_000
