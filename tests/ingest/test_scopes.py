"""Tenancy and authority of producer tokens (issue 16 item 1), against a real ``opsloop ingest``.

Before: ``/ingest/events`` let any token choose kind, type, source and org, so a
scanner token posting in org "mallory" created a silence that muted alerts in
"acme" and "bigcorp", and acks / resolves / remediation approvals needed no
signature. Now a token writes only within its scope (orgs, kinds, types), control
events need ``control: true``, a silence from a non-operator token gets an
``org="<org>"`` matcher, and every event records who produced it.
"""

from __future__ import annotations

import json
import uuid

import pytest

from streams.ingest.errors import BadRequest, Forbidden
from streams.ingest.scopes import PRODUCER_ANNOTATION, Principal, Scope, authorize, parse_scopes
from tests.ingest.conftest import TOKENS, bearer, read_events, scoped_ingest

pytestmark = pytest.mark.integration

SCOPES = {
    # a producer token for org "a" that may also write control events there
    "alertmanager": {"orgs": ["a"], "kinds": ["telemetry", "webhook"], "control": True},
    # a producer token for org "a" without control
    "scanner": {"orgs": ["a"], "kinds": ["scan", "telemetry"]},
    # prometheus: no entry, the default scope (any org, no control)
}


def silence(org: str, event_id: str) -> dict:
    body = {"matchers": ['alertname="Disk"'], "starts_at": 1, "ends_at": 4_000_000_000_000, "comment": "x"}
    return {
        "kind": "webhook",
        "type": "silence.created",
        "source": "cli",
        "org": org,
        "occurred_at": 1,
        "session_key": f"{org}:silences",
        "event_id": event_id,
        "payload": {
            "provider": "opsloop",
            "action": "create",
            "subject": "s",
            "actor": "me",
            "body_json": json.dumps(body),
        },
    }


def control(etype: str, org: str) -> dict:
    return {
        "kind": "webhook",
        "type": etype,
        "source": "cli",
        "org": org,
        "occurred_at": 1,
        "session_key": f"{org}:x",
        "payload": {"provider": "opsloop", "action": etype, "subject": "s", "actor": "me", "body_json": "{}"},
    }


@pytest.fixture(scope="module")
def scoped(kafka_bootstrap, tmp_path_factory):
    with scoped_ingest(kafka_bootstrap, SCOPES, tmp_path_factory.mktemp("scopes")) as served:
        yield served


@pytest.mark.parametrize(
    "etype", ["silence.created", "ack", "incident.acknowledged", "resolve", "remediation.approved"]
)
def test_a_token_for_org_a_cannot_create_control_events_for_org_b(scoped, http, etype):
    """Guards item 1: cross-org control events are 403 naming the org, even with control granted."""
    server, _ = scoped
    answer = http.post(server.url("/ingest/events"), json=control(etype, "b"), headers=bearer("alertmanager"))
    assert answer.status_code == 403 and "may not write to org 'b'" in answer.json()["error"]


@pytest.mark.parametrize("etype", ["ack", "resolve", "alert.resolved", "alert.firing"])
def test_a_token_for_org_a_cannot_reach_org_bs_session_by_naming_it(scoped, http, etype):
    """A session is found by its key alone: an event of org "a" (which the token may write) naming org "b"'s
    session would have acknowledged, resolved or added to b's incident. 400 naming the key; nothing written."""
    server, _ = scoped
    body = {**control(etype, "a"), "session_key": "b:alert:DiskFull:db"}
    if etype.startswith("alert."):
        body = {**body, "kind": "telemetry", "labels": {"alertname": "DiskFull", "service": "db"}, "payload": None}
    answer = http.post(server.url("/ingest/events"), json=body, headers=bearer("alertmanager"))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == (
        "session_key: 'b:alert:DiskFull:db' is not a session of org 'a': it must start with 'a:'"
    )
    own = http.post(
        server.url("/ingest/events"),
        json={**body, "session_key": "a:alert:DiskFull:db"},
        headers=bearer("alertmanager"),
    )
    assert own.status_code == 200, own.text


def test_timer_events_are_opsloops_own_unless_a_scope_names_the_kind(scoped, http):
    """One timer.fired posted by a producer (due_at far ahead) fired its session's whole escalation chain at once:
    PagerDuty paged 31 s after the alert instead of 15 min. Timer events come from opsloop's ticker; a token
    writes one only when its scope names ``kind: timer``."""
    from streams.ingest.scopes import DEFAULT_KINDS

    server, _ = scoped
    forged = {
        "kind": "timer",
        "type": "timer.fired",
        "source": "cli",
        "org": "a",
        "session_key": "a:alert:DiskFull:db",
        "occurred_at": 1,
        "payload": {"timer_id": "x", "purpose": "escalation", "due_at": 4_000_000_000_000, "step": 0, "data": {}},
    }
    for name in ("prometheus", "alertmanager"):  # the default scope, and one that names its kinds without timer
        answer = http.post(server.url("/ingest/events"), json=forged, headers=bearer(name))
        assert answer.status_code == 403 and "may not write timer events" in answer.json()["error"], answer.text
    assert "timer" not in DEFAULT_KINDS and "timer" not in parse_scopes({"x": {}}, "f")["x"].kinds
    assert "timer" in parse_scopes({"x": {"kinds": ["timer"]}}, "f")["x"].kinds


@pytest.mark.parametrize(
    "etype",
    ["silence.created", "silence.expired", "ack", "incident.resolved", "remediation.approved", "remediation.rejected"],
)
def test_a_token_without_control_cannot_create_control_events_at_all(scoped, http, etype):
    """Guards item 1: control events need control: true, in its own org and with the default scope alike."""
    server, _ = scoped
    for name, org in (("scanner", "a"), ("prometheus", "mallory")):
        answer = http.post(server.url("/ingest/events"), json=control(etype, org), headers=bearer(name))
        assert answer.status_code == 403, (name, answer.text)
        assert f"may not create control events ({etype})" in answer.json()["error"]


def test_the_mallory_silence_is_refused_and_a_granted_one_is_scoped_to_its_org(scoped, http):
    """Guards item 1: the issue's exploit (scanner token, org mallory, silence) is 403; a granted
    non-operator silence is accepted with an org="a" matcher added and the producer recorded."""
    server, settings = scoped
    mallory = http.post(server.url("/ingest/events"), json=silence("mallory", "m1"), headers=bearer("scanner"))
    assert mallory.status_code == 403
    other_kind = http.post(
        server.url("/ingest/events"), json={**control("pr.opened", "a"), "kind": "webhook"}, headers=bearer("scanner")
    )
    assert other_kind.status_code == 403 and "may not write webhook events" in other_kind.json()["error"]
    forged = http.post(
        server.url("/ingest/events"),
        json={**control("pr.opened", "a"), "source": "pagerduty"},
        headers=bearer("alertmanager"),
    )
    assert forged.status_code == 403 and "reserved for the signed webhook" in forged.json()["error"]

    ok = http.post(
        server.url("/ingest/events"), json=silence("a", f"ok-{uuid.uuid4().hex[:6]}"), headers=bearer("alertmanager")
    )
    assert ok.status_code == 200, ok.text
    eid = ok.json()["event_ids"][0]
    records = read_events(settings, lambda rs: any(r.value and r.value["event_id"] == eid for r in rs))
    event = next(r.value for r in records if r.value and r.value["event_id"] == eid)
    body = json.loads(event["payload"]["body_json"])
    assert body["matchers"] == ['alertname="Disk"', 'org="a"']
    assert body["org"] == "a"  # decide lets it create, replace or expire only org a's own silences
    assert event["annotations"][PRODUCER_ANNOTATION] == "token:alertmanager"

    # an expiry from the same token is limited to its org too (it could end org b's silence by naming its id)
    expiry = {
        **control("silence.expired", "a"),
        "session_key": "a:silences",
        "payload": {
            "provider": "opsloop",
            "action": "expire",
            "subject": "sb",
            "actor": "me",
            "body_json": json.dumps({"id": "sb", "org": "b"}),
        },
    }
    answer = http.post(server.url("/ingest/events"), json=expiry, headers=bearer("alertmanager"))
    assert answer.status_code == 200, answer.text
    eid = answer.json()["event_ids"][0]
    records = read_events(settings, lambda rs: any(r.value and r.value["event_id"] == eid for r in rs))
    event = next(r.value for r in records if r.value and r.value["event_id"] == eid)
    assert json.loads(event["payload"]["body_json"]) == {"id": "sb", "org": "a"}  # the client's "org" replaced


def test_a_token_of_one_org_writes_to_it_without_naming_it(scoped, http):
    """A Prometheus given org a's token and no ``?org=`` had every push refused: 403 "may not write to org
    'default'". The token's one org is the post's org when it names none; naming another is still a 403."""
    server, settings = scoped
    name = f"OneOrg{uuid.uuid4().hex[:6]}"
    alert = [{"labels": {"alertname": name, "service": "x"}}]
    answer = http.post(server.url("/api/v2/alerts"), json=alert, headers=bearer("scanner"))
    assert answer.status_code == 200, answer.text
    eid = answer.json()["event_ids"][0]
    records = read_events(settings, lambda rs: any(r.value and r.value["event_id"] == eid for r in rs))
    event = next(r.value for r in records if r.value and r.value["event_id"] == eid)
    assert (event["org"], event["session_key"]) == ("a", f"a:alert:{name}:x")
    other = http.post(server.url("/api/v2/alerts?org=b"), json=alert, headers=bearer("scanner"))
    assert other.status_code == 403 and "may not write to org 'b'" in other.json()["error"]
    # a silence the same way: ?org= of another org is a 403, not quietly org a's silence (the token's org used
    # to come before ?org= for silences only)
    silence = {
        "matchers": [{"name": "service", "value": "x", "isRegex": False}],
        "startsAt": "2030-01-01T00:00:00Z",
        "endsAt": "2030-01-01T01:00:00Z",
        "createdBy": "t",
        "comment": "c",
    }
    answer = http.post(server.url("/api/v2/silences?org=b"), json=silence, headers=bearer("alertmanager"))
    assert answer.status_code == 403 and "may not write to org 'b'" in answer.text, answer.text


def test_every_event_records_its_producer_and_a_client_cannot_forge_it(scoped, http):
    """Guards item 1: the opsloop_producer annotation is ingest's, not the client's."""
    server, settings = scoped
    generic = {
        "kind": "telemetry",
        "type": "metric.sample",
        "source": "cli",
        "occurred_at": 1,
        "org": "a",
        "labels": {"alertname": f"P{uuid.uuid4().hex[:6]}", "service": "x"},
        "annotations": {PRODUCER_ANNOTATION: "webhook:pagerduty"},
    }
    answer = http.post(server.url("/ingest/events"), json=generic, headers=bearer("scanner"))
    assert answer.status_code == 200, answer.text
    eid = answer.json()["event_ids"][0]
    records = read_events(settings, lambda rs: any(r.value and r.value["event_id"] == eid for r in rs))
    event = next(r.value for r in records if r.value and r.value["event_id"] == eid)
    assert event["annotations"][PRODUCER_ANNOTATION] == "token:scanner"


def test_a_silence_of_a_credential_held_to_one_org_may_not_name_another_org():
    """Its org matcher was replaced by the credential's org: ``org=~"acme"`` or ``org!="a"`` from a credential
    of org a became a silence of every alert of org a, the opposite of what it asked. Now a 403 naming the
    matcher; an org matcher that holds for its own org is narrowed to it, as before."""

    def event_with(*matchers: str) -> dict:
        event = silence("a", "x")
        event["payload"] = {
            **event["payload"],
            "body_json": json.dumps({"matchers": list(matchers), "starts_at": 1, "ends_at": 2}),
        }
        return event

    bot = Principal("bot", "token", Scope(orgs=("a",), control=True))
    for other in ('org=~"acme"', 'org!="a"', 'org=""', 'org=~"b|c"'):
        event = event_with('service="db"', other)
        with pytest.raises(Forbidden, match="does not select org 'a', the only org this credential may silence"):
            authorize(bot, event)
    event = event_with('service="db"', 'org=~"a|b"')
    authorize(bot, event)
    assert json.loads(event["payload"]["body_json"])["matchers"] == ['service="db"', 'org="a"']
    # a silence event posted as such (/ingest/events) that selects nothing as written: the org matcher added
    # here selected by itself, so decide took `service!="web"` as a silence of all of org a but web
    with pytest.raises(BadRequest, match="a silence must select something"):
        authorize(bot, event_with('service!="web"'))


def test_an_operator_silence_stays_as_written_and_scopes_parse_strictly():
    """Guards item 1 (unit): operator scope keeps the matchers; a typo in the scopes is refused."""
    event = silence("a", "x")
    authorize(Principal("console", "token", Scope(control=True, operator=True)), event)
    assert json.loads(event["payload"]["body_json"])["matchers"] == ['alertname="Disk"']
    assert "org" not in json.loads(event["payload"]["body_json"])  # an operator's silence event is not limited
    event = {**silence("a", "y")}
    event["payload"] = {
        **event["payload"],
        "body_json": json.dumps({"matchers": ['org=~".*"', 'a="b"'], "starts_at": 1, "ends_at": 2}),
    }
    authorize(Principal("bot", "token", Scope(control=True)), event)
    assert json.loads(event["payload"]["body_json"])["matchers"] == ['a="b"', 'org="a"']
    with pytest.raises(ValueError, match="unknown key 'contorl'"):
        parse_scopes({"producers": {"x": {"contorl": True}}}, "f")
    with pytest.raises(ValueError, match="unknown kind 'alerts'"):
        parse_scopes({"x": {"kinds": ["alerts"]}}, "f")
    assert parse_scopes({"producers": {"x": {"orgs": "a"}}}, "f")["x"].orgs == ("a",)
    # every session key is "<org>:...": a producer of an org "acme:alert" would own acme's "acme:alert:..." sessions
    with pytest.raises(ValueError, match="'acme:alert' contains ':', which separates a session key's org"):
        parse_scopes({"x": {"orgs": ["acme:alert"]}}, "f")
    assert set(TOKENS) >= set(SCOPES)


def test_the_scopes_file_refuses_a_producer_named_twice_and_names_the_line(tmp_path):
    """The grant file was read with plain yaml.safe_load: a producer listed twice passed, the second entry
    winning (what it may do changed without a word), and errors named no line."""
    from streams.errors import ConfigError
    from streams.ingest.scopes import ScopeConfigError, load_scopes

    twice = tmp_path / "twice.yaml"
    twice.write_text("producers:\n  a: {orgs: [a]}\n  a: {orgs: [b]}\n")
    with pytest.raises(ConfigError, match=r"twice.yaml:3: duplicate key 'a'"):
        load_scopes(twice, "")
    with pytest.raises(ConfigError, match=r"OPSLOOP_INGEST_SCOPES:1: duplicate key 'orgs'"):
        load_scopes(None, "{producers: {a: {orgs: [a], orgs: [b]}}}")
    typo = tmp_path / "typo.yaml"
    typo.write_text("producers:\n  a:\n    orgs: [a]\n    contrl: true\n")
    with pytest.raises(ScopeConfigError, match=r"typo.yaml:4: producer 'a': unknown key 'contrl'"):
        load_scopes(typo, "")
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"deep.yaml: invalid YAML: nested too deeply"):
        load_scopes(deep, "")
