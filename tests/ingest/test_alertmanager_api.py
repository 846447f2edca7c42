"""Alertmanager's silence API and alert list on a real ``opsloop ingest``, driven by Debian's real ``amtool``.

``amtool silence add`` / ``query`` / ``update`` / ``expire`` against ingest's ``POST /api/v2/silences``,
``GET /api/v2/silences``, ``GET`` and ``DELETE /api/v2/silence/{id}``: the events they produce (what
``opsloop silence`` produces), the silences read back from the audit store, the token's scope (control to
write or read one, operator to cover more than its own org), and refusals as Alertmanager answers them
(the reason as a JSON string, which amtool prints).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams.audit.store import Position, migrate, write_batch
from streams.db import make_engine
from tests.ingest.conftest import TOKENS, IngestServer, bearer, read_all_events, read_events, scoped_ingest

pytestmark = pytest.mark.integration

SCOPES = {
    "prometheus": {"orgs": ["*"], "control": True, "operator": True},  # an operator's token
    "alertmanager": {"orgs": ["a"], "control": True},  # one org's on-call token
    "scanner": {"orgs": ["a"]},  # no control
}


@pytest.fixture(scope="module")
def server(kafka_bootstrap, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("silences")
    database_url = f"sqlite:///{tmp / 'audit.db'}"
    migrate(make_engine(database_url))  # the audit store ingest reads silences from (the projector's)
    with scoped_ingest(kafka_bootstrap, SCOPES, tmp, DATABASE_URL=database_url) as served:
        yield served


def project(settings) -> None:
    """Store the silence and alert events as ``opsloop projector`` does (the same rows; one again is a no-op)."""
    engine = make_engine(settings.database_url.get_secret_value())
    records = read_all_events(settings, idle=1.0, topics=["events.webhook", "events.telemetry"])
    prefix = settings.topic_prefix
    write_batch(engine, [(Position(r.topic.removeprefix(prefix), r.partition, r.offset), r.value) for r in records])


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
    # an org matcher that does not select the token's org is refused, not replaced by org="a" (which made a
    # silence of org a's every x service: the opposite of what `org!=a` asks)
    for org_matcher in ("org=~b", "org!=a"):
        refused = amtool(
            ingest, "alertmanager", tmp_path, "silence", "add", org_matcher, f"service=x-{tag}", "--comment=x"
        )
        assert refused.returncode != 0 and "403" in refused.stderr, (org_matcher, refused.stderr)
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


def test_amtool_queries_updates_and_expires_the_silences_the_audit_store_holds_within_the_tokens_orgs(
    server, tmp_path, http
):
    ingest, settings = server
    tag = uuid.uuid4().hex[:6]
    a_id = amtool(ingest, "alertmanager", tmp_path, "silence", "add", f"service=web-{tag}", "--duration=1h",
                  "--comment=a web").stdout.strip()  # fmt: skip
    b_id = amtool(ingest, "prometheus", tmp_path, "silence", "add", "org=b", f"service=db-{tag}", "--duration=2h",
                  "--comment=b db").stdout.strip()  # fmt: skip
    assert a_id and b_id
    project(settings)

    def query(token: str, *args: str) -> dict[str, dict]:
        done = amtool(ingest, token, tmp_path, "silence", "query", "-o", "json", *args)
        assert done.returncode == 0, done.stderr
        return {s["id"]: s for s in json.loads(done.stdout) if tag in str(s["matchers"])}

    # each token reads its own orgs' silences; the operator's reads every org's
    assert set(query("alertmanager")) == {a_id}
    both = query("prometheus")
    assert set(both) == {a_id, b_id} and both[b_id]["comment"] == "b db"
    assert both[b_id]["matchers"] == [
        {"name": "org", "value": "b", "isRegex": False, "isEqual": True},
        {"name": "service", "value": f"db-{tag}", "isRegex": False, "isEqual": True},
    ]
    assert both[a_id]["status"] == {"state": "active"}
    assert set(query("prometheus", f"service=db-{tag}")) == {b_id}  # amtool's filter (Alertmanager's ?filter=)
    assert set(query("prometheus", f'service=~"(web|db)-{tag}"', "org=a")) == {a_id}
    no_control = amtool(ingest, "scanner", tmp_path, "silence", "query")
    assert no_control.returncode != 0 and "403" in no_control.stderr

    # amtool silence update reads the silence, then posts it with its id and the new end
    updated = amtool(ingest, "alertmanager", tmp_path, "silence", "update", a_id, "--duration=3h")
    assert updated.returncode == 0, updated.stderr
    project(settings)
    ends = datetime.fromisoformat(query("alertmanager")[a_id]["endsAt"].replace("Z", "+00:00"))
    assert timedelta(hours=2, minutes=59) < ends - datetime.now(UTC) <= timedelta(hours=3)

    # an org's token cannot expire (or see, or update) another org's silence; the operator's expiry lands in its org
    other = amtool(ingest, "alertmanager", tmp_path, "silence", "expire", b_id)
    assert other.returncode != 0 and "404" in other.stderr
    hijack = {**both[b_id], "matchers": [{"name": "service", "value": "x", "isRegex": False, "isEqual": True}]}
    refused = http.post(ingest.url("/api/v2/silences"), json=hijack, headers=bearer("alertmanager"))
    assert refused.status_code == 404 and "no silence" in refused.json()  # it was 200, and decide refused it unseen
    # a token without control is refused as before, the store not asked: its answer says nothing of b's silence
    no_control = amtool(ingest, "scanner", tmp_path, "silence", "expire", b_id)
    assert no_control.returncode != 0 and "403" in no_control.stderr
    assert amtool(ingest, "prometheus", tmp_path, "silence", "expire", b_id).returncode == 0
    event, body = body_of(settings, b_id, "silence.expired")
    assert event["org"] == "b" and body == {"id": b_id}  # not the default org: the store knows the silence's
    project(settings)
    assert query("prometheus", "--expired")[b_id]["status"] == {"state": "expired"}

    # the operator's silence of every org (no org matcher) mutes org a's alerts: listed to org a's token, which
    # may not end it (403, not "no such silence": it was in no list of org a's, and a 404 to it)
    all_id = amtool(ingest, "prometheus", tmp_path, "silence", "add", f"service=all-{tag}", "--duration=1h",
                    "--comment=every org").stdout.strip()  # fmt: skip
    project(settings)
    assert all_id in query("alertmanager")
    denied = amtool(ingest, "alertmanager", tmp_path, "silence", "expire", all_id)
    assert denied.returncode != 0 and "403" in denied.stderr, denied.stderr

    one = http.get(ingest.url(f"/api/v2/silence/{a_id}"), headers=bearer("alertmanager"))
    assert one.status_code == 200 and one.json()["id"] == a_id
    hidden = http.get(ingest.url(f"/api/v2/silence/{b_id}"), headers=bearer("alertmanager"))
    assert hidden.status_code == 404 and "no silence" in hidden.json()
    bad = http.get(ingest.url("/api/v2/silences"), params={"filter": "service=~("}, headers=bearer("prometheus"))
    assert bad.status_code == 400 and bad.json().startswith("filter[0]:")


def test_amtool_alert_query_lists_the_firing_alerts_of_the_tokens_orgs_with_the_silences_that_mute_them(
    server, tmp_path, http
):
    ingest, settings = server
    tag = uuid.uuid4().hex[:6]
    for org, service in (("a", f"db-{tag}"), ("b", f"web-{tag}")):
        posted = http.post(
            ingest.url(f"/api/v2/alerts?org={org}"),
            json=[
                {
                    "labels": {"alertname": f"Down{tag}", "service": service, "severity": "critical"},
                    "annotations": {"summary": f"{service} down"},
                }
            ],  # fmt: skip
            headers=bearer("prometheus"),
        )
        assert posted.status_code == 200, posted.text
    muted = amtool(ingest, "prometheus", tmp_path, "silence", "add", "org=b", f"service=web-{tag}", "--comment=m")
    assert muted.returncode == 0, muted.stderr
    project(settings)

    def alerts(token: str, *args: str) -> dict[str, dict]:
        done = amtool(ingest, token, tmp_path, "alert", "query", "-o", "json", *args)
        assert done.returncode == 0, done.stderr
        return {a["labels"]["service"]: a for a in json.loads(done.stdout) if tag in a["labels"]["alertname"]}

    # amtool's default: the active ones; the org's token sees its own org's only
    assert set(alerts("prometheus")) == {f"db-{tag}"}
    every = alerts("prometheus", "--silenced", "--active")
    assert set(every) == {f"db-{tag}", f"web-{tag}"}
    web = every[f"web-{tag}"]
    assert web["status"]["state"] == "suppressed" and web["status"]["inhibitedBy"] == []
    assert muted.stdout.strip() in web["status"]["silencedBy"]  # (an earlier test's org b silence may mute it too)
    assert web["labels"]["org"] == "b" and web["annotations"]["summary"] == f"web-{tag} down"
    # no endsAt sent: it ends after the resolve timeout, as in Alertmanager (rounded up to 30 s)
    ends = datetime.fromisoformat(web["endsAt"].replace("Z", "+00:00")) - datetime.fromisoformat(
        web["startsAt"].replace("Z", "+00:00")
    )
    assert timedelta(minutes=5) <= ends <= timedelta(minutes=5, seconds=30)
    assert set(alerts("alertmanager", "--silenced", "--active")) == {f"db-{tag}"}
    assert set(alerts("prometheus", f"service=db-{tag}")) == {f"db-{tag}"}
    no_control = amtool(ingest, "scanner", tmp_path, "alert", "query")
    assert no_control.returncode != 0 and "403" in no_control.stderr
