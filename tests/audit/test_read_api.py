"""The read API and `opsloop incidents list` / `silence list` over incidents the projector folded, on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from streams.api.app import create_app
from streams.api.auth import ApiAuth, ApiTokenConfigError
from streams.audit import store
from streams.audit.store import Position
from streams.model.matchers import parse_matcher
from streams.model.silences import Silence, expire_event, silence_event
from tests.audit.records import decision, event

ROOT = Path(__file__).resolve().parents[2]
ADMIN, ACME = "admin-token-0123456789", "acme-token-9876543210"
T0 = 1_700_000_000_000

# session, org, service, severity, outcome (extra matched)
INCIDENTS = [
    ("acme:db:db-1", "acme", "db-main", "urgent", "notified"),
    ("acme:db:db-2", "acme", "dbproxy", "urgent", "notified"),
    ("acme:db:db-3", "acme", "db-replica", "warning", "notified"),
    ("acme:web:web-1", "acme", "web", "urgent", "acknowledged"),
    ("globex:db:db-9", "globex", "db-x", "urgent", "notified"),
    ("globex:db:db-8", "globex", "db-y", "urgent", "resolved"),
]


def limited_to(event: dict, org: str) -> dict:
    from streams.ingest.scopes import scope_silence_to_org

    scope_silence_to_org(event, org)  # what ingest does to a silence event of a token without operator: true
    return event


def _records() -> list:
    items = []
    for i, (session, org, service, severity, outcome) in enumerate(INCIDENTS):
        for j, out in enumerate(["notified", outcome] if outcome != "notified" else ["notified"]):
            n = i * 10 + j
            ev = event(n, session)
            ev.update(org=org, labels={"alertname": "Down", "service": service, "team": "data"})
            dec = decision(n, session)
            matched = {"acked_by": "alice"} if out == "acknowledged" else {"receivers": f"{org}-pager"}
            dec.update(org=org, outcome=out, severity=severity, category="database", gates=[], matched=matched)
            items += [(Position("events.telemetry", 0, n), ev), (Position("decisions", 0, n), dec)]
    now = int(time.time() * 1000)
    active = Silence("sil-active", (parse_matcher('service="db-main"'),), now - 60_000, now + 3_600_000, "bob", "db")
    gone = Silence("sil-gone", (parse_matcher('service="web"'),), now - 7_200_000, now + 3_600_000, "bob", "web")
    for k, ev in enumerate(
        [
            silence_event(active, org="acme", now_ms=now - 60_000, actor="bob"),
            silence_event(gone, org="acme", now_ms=now - 7_200_000, actor="bob"),
            expire_event("sil-gone", org="acme", now_ms=now - 3_600_000),
            # a globex token without operator: true naming acme's silence: decide refuses it, and so does the list
            limited_to(expire_event("sil-active", org="globex", now_ms=now - 30_000), "globex"),
        ]
    ):
        ev["received_at"] = ev["occurred_at"]
        items.append((Position("events.webhook", 0, k), ev))
    return items


@pytest.fixture
def api_db(pg_audit_db):
    url, engine = pg_audit_db
    store.migrate(engine)
    store.write_batch(engine, _records())
    store.dead_letter(engine, Position("decisions", 1, 77), {"decision_id": "x\x00"}, reason="DataError: NUL")
    return url, engine


def call(engine, requests: list[tuple[str, str | None]]) -> list[tuple[int, dict]]:
    auth = ApiAuth({"admin": ADMIN, "acme-console": ACME}, {"acme-console": frozenset({"acme"})})

    async def run():
        out = []
        async with TestClient(TestServer(create_app(engine, auth))) as client:
            for path, token in requests:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                response = await client.get(path, headers=headers)
                out.append((response.status, await response.json()))
        return out

    return asyncio.run(run())


def keys(body: dict) -> list[str]:
    return [i["session_key"] for i in body["incidents"]]


def test_a_filtered_incident_list(api_db):
    _, engine = api_db
    q = "/api/v1/incidents?filter=" + 'service=~"db.*",severity="urgent"'
    answers = call(
        engine,
        [
            (q + "&status=firing&sort=-last_seen", ADMIN),
            (q + "&status=firing,acknowledged&sort=session_key", ADMIN),
            (
                "/api/v1/incidents?filter=" + quote('service=~"db-[a-z]+"') + '&filter=org!="globex"&sort=session_key',
                ADMIN,
            ),
            ('/api/v1/incidents?filter=status="acknowledged"', ADMIN),
            ('/api/v1/incidents?filter=team="data",service=~"db.*"&sort=session_key', ACME),
        ],
    )
    assert [status for status, _ in answers] == [200] * 5
    assert keys(answers[0][1]) == ["globex:db:db-9", "acme:db:db-2", "acme:db:db-1"]  # newest first
    assert keys(answers[1][1]) == ["acme:db:db-1", "acme:db:db-2", "globex:db:db-9"]
    assert keys(answers[2][1]) == ["acme:db:db-1", "acme:db:db-3"]  # a regex SQL cannot take: Python's
    (acked,) = answers[3][1]["incidents"]
    assert (acked["session_key"], acked["acked_by"], acked["labels"]["service"]) == ("acme:web:web-1", "alice", "web")
    assert keys(answers[4][1]) == ["acme:db:db-1", "acme:db:db-2", "acme:db:db-3"]  # the acme token sees acme only


GROUP = "acme:alert:KubePodCrashLooping:shop"


def _group_records() -> list:
    """One incident of three pods' alerts (kube-prometheus's KubePodCrashLooping, a session per namespace)."""
    items = []
    for n, (pod, container) in enumerate([("cart-1", "cart"), ("checkout-2", "checkout"), ("cart-1", "cart")], 100):
        ev = event(n, GROUP)
        labels = {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": pod, "container": container}
        ev.update(org="acme", labels=labels)
        dec = decision(n, GROUP)
        dec.update(org="acme", outcome="notified", severity="warning", category="capacity", gates=[], matched={})
        items += [(Position("events.telemetry", 1, n), ev), (Position("decisions", 1, n), dec)]
    return items


@pytest.fixture
def group_db(api_db):
    url, engine = api_db
    store.write_batch(engine, _group_records())
    return url, engine


def test_a_filter_finds_an_incident_by_any_of_its_alerts_not_only_the_latest(group_db):
    """An incident of several pods' alerts: its merged labels hold the last alert's pod, and ``pod="checkout-2"``
    found nothing once cart-1's alert came again; one alert must match every matcher, as Alertmanager's."""
    _, engine = group_db
    answers = call(
        engine,
        [
            ('/api/v1/incidents?filter=pod="checkout-2"', ADMIN),
            ("/api/v1/incidents?filter=" + quote('pod=~"check.*"'), ADMIN),
            ('/api/v1/incidents?filter=pod="checkout-2",container="checkout"', ADMIN),
            ('/api/v1/incidents?filter=pod="checkout-2",container="cart"', ADMIN),  # no one alert has both
            ('/api/v1/incidents?filter=pod!="cart-1",alertname="KubePodCrashLooping"', ADMIN),
        ],
    )
    assert [keys(body) for _, body in answers] == [[GROUP], [GROUP], [GROUP], [], [GROUP]]
    (row,) = answers[0][1]["incidents"]
    assert row["labels"]["pod"] == "cart-1"  # the list shows the latest
    assert [a["pod"] for a in row["alerts"]] == ["checkout-2", "cart-1"]  # most recent last, each once
    table = subprocess.run(
        [sys.executable, "-m", "streams.cli", "incidents", "list", "--filter", 'pod="checkout-2"'],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": group_db[0]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    (line,) = [line for line in table.stdout.splitlines() if GROUP in line]
    assert line.endswith("alertname=KubePodCrashLooping,namespace=shop (2 alerts)"), table.stdout + table.stderr


def test_pages_follow_the_cursor_to_the_end(api_db):
    _, engine = api_db
    (whole,) = call(engine, [("/api/v1/incidents?sort=first_seen&limit=100", ADMIN)])
    seen, cursor, pages = [], None, 0
    while True:
        path = "/api/v1/incidents?sort=first_seen&limit=2" + (f"&cursor={cursor}" if cursor else "")
        ((status, body),) = call(engine, [(path, ADMIN)])
        assert status == 200
        seen += keys(body)
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == keys(whole[1]) and len(seen) == len(INCIDENTS)
    assert pages == 3


def test_refusals_say_why(api_db):
    _, engine = api_db
    answers = call(
        engine,
        [
            ("/api/v1/incidents", None),
            ("/api/v1/incidents", "not-a-token"),
            ("/api/v1/nothing-here", None),
            ('/api/v1/incidents?filter=service=~"db(",severity="urgent"', ADMIN),
            ("/api/v1/incidents?filter=9service=x", ADMIN),
            ("/api/v1/incidents?status=burning", ADMIN),
            ("/api/v1/incidents?sort=-last_seen&cursor=abc", ADMIN),
            ("/api/v1/incidents/globex:db:db-9", ACME),
            ("/api/v1/deadletters", ACME),
            ("/api/v1/incidents/acme:nope", ADMIN),
            ("/api/v1/incidents/acme:a%00b", ADMIN),  # PostgreSQL refuses a NUL in a text parameter: was a 500
            ('/api/v1/incidents?filter=service="%00"', ADMIN),
            # another org's key it does not have: 403 as for one it has (a 404 told which keys globex has)
            ("/api/v1/incidents/globex:db:nope", ACME),
        ],
    )
    assert [status for status, _ in answers] == [401, 401, 401, 400, 400, 400, 400, 403, 403, 404, 400, 400, 403]
    errors = [body["error"] for _, body in answers]
    assert "Bearer" in errors[0] and errors[1] == "unknown token"
    assert "service=~" in errors[3] and "invalid regular expression" in errors[3]
    assert "9service=x" in errors[4]
    assert "burning" in errors[5]
    assert "cursor" in errors[6]
    assert "globex" in errors[7] and "dead letters" in errors[8]
    assert errors[10] == "path: contains a control character" and errors[11] == "filter: contains a control character"


def test_an_incident_with_its_timeline_silences_and_dead_letters(api_db):
    _, engine = api_db
    (one, silences, active, letters) = call(
        engine,
        [
            ("/api/v1/incidents/acme:web:web-1", ACME),
            ("/api/v1/silences", ACME),
            ("/api/v1/silences?state=active", ADMIN),
            ("/api/v1/deadletters", ADMIN),
        ],
    )
    assert one[0] == 200
    assert one[1]["incident"]["status"] == "acknowledged"
    assert [e["decision"]["outcome"] for e in one[1]["timeline"]] == ["notified", "acknowledged"]
    assert {(s["id"], s["state"]) for s in silences[1]["silences"]} == {
        ("sil-active", "active"),
        ("sil-gone", "expired"),
    }
    assert [s["id"] for s in active[1]["silences"]] == ["sil-active"]
    assert [(d["topic"], d["offset"]) for d in letters[1]["dead_letters"]] == [("decisions", 77)]


def test_tokens_never_reach_the_log_and_bad_token_config_fails_at_start(api_db, caplog):
    _, engine = api_db
    with caplog.at_level(logging.INFO, logger="streams.api"):
        call(engine, [("/api/v1/incidents", ADMIN), ("/api/v1/incidents", ACME + "x")])
    assert "by admin -> 200" in caplog.text
    assert ADMIN not in caplog.text and ACME not in caplog.text
    with pytest.raises(ApiTokenConfigError, match="entry 2") as bad:
        ApiAuth.from_environ({"OPSLOOP_API_TOKENS": "a=secret-a,b"})
    assert "secret-a" not in str(bad.value)
    with pytest.raises(ApiTokenConfigError, match="OPSLOOP_API_TOKENS is empty"):
        ApiAuth.from_environ({})


def test_the_command_line_answers_what_the_api_answers(api_db):
    url, engine = api_db
    env = {**os.environ, "DATABASE_URL": url}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )

    listed = cli("incidents", "list", "--filter", 'service=~"db.*",severity="urgent"', "--status", "firing", "--json")
    assert listed.returncode == 0, listed.stderr
    ((_, api),) = call(engine, [('/api/v1/incidents?filter=service=~"db.*",severity="urgent"&status=firing', ADMIN)])
    assert keys(json.loads(listed.stdout)) == keys(api) == ["globex:db:db-9", "acme:db:db-2", "acme:db:db-1"]
    table = cli("incidents", "list", "--status", "acknowledged")
    assert table.returncode == 0 and "acme:web:web-1" in table.stdout and "1 incident(s)" in table.stdout
    bad = cli("incidents", "list", "--filter", 'service=~"("')
    assert bad.returncode == 1 and "filter:" in bad.stderr
    silences = cli("silence", "list")
    assert silences.returncode == 0
    assert "sil-active" in silences.stdout and "expired" in silences.stdout and "2 silence(s)" in silences.stdout


def test_silence_expire_looks_the_id_up_first(api_db, settings, monkeypatch, capsys):
    """An unknown id, another org's silence or an expired one is refused before anything reaches Kafka;
    a missing topic is one line at once (aiokafka alone waited 40 s, then a traceback)."""
    from streams.cli.main import main
    from streams.kafka.admin import apply
    from streams.kafka.catalogue import load_catalogue

    url, _ = api_db
    monkeypatch.setenv("DATABASE_URL", url)  # and the test's own topic prefix: its one topic the expiry goes to
    webhook = [spec for spec in load_catalogue(settings.topics_file) if spec.name.endswith("events.webhook")]
    asyncio.run(apply(settings, webhook))

    def cli(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    code, _, err = cli("silence", "expire", "sil-nope")
    assert code == 3 and "no silence 'sil-nope'" in err, err
    code, _, err = cli("silence", "expire", "sil-active", "--org", "globex")
    assert code == 3 and "in org 'globex'" in err
    code, _, err = cli("silence", "expire", "sil-gone")
    assert code == 1 and "has already expired" in err
    with monkeypatch.context() as m:
        m.setenv("OPSLOOP_TOPIC_PREFIX", "nowhere.")
        code, _, err = cli("silence", "expire", "sil-active")
    assert code == 3 and err == "opsloop: topic 'nowhere.events.webhook' does not exist (run `opsloop topics apply`)\n"
    code, out, err = cli("silence", "expire", "sil-active")
    assert code == 0 and "expired silence sil-active" in out, err


@pytest.mark.parametrize(
    "matchers",
    [
        'team="data"',
        'team=""',
        'team!="data"',
        'service=~"db.*"',
        'service!~"db.*"',
        'service=~"db-(main|x)"',
        'service=~"db-[a-z]+"',
        'service=~"db-[a-z]{2,4}"',
        'service!~"db-[^m][a-z]+"',
        'service!~"db-[a-z]{4}"',
        'service=~"[a-c]b-.*"',
        'service=~"zz[a-z]"',
        'nolabel=~""',
        'nolabel=~"x|"',
        'severity!="urgent",org=~"acme|globex"',
        'status=~"firing|resolved",category="database"',
        'session_key=~"acme:db:.*"',
        'alertname="Down",service="web"',
        'pod="checkout-2"',
        'pod=~"cart-.*",container="cart"',
        'pod!~"cart-[0-9]"',
        'pod=~"checkout-[0-9]",container!="checkout"',
    ],
)
def test_what_sql_narrows_python_would_keep_too(group_db, matchers):
    """SQL only narrows: the answer is exactly the matchers applied in Python to every row (to each of its alerts)."""
    from streams.audit import queries
    from streams.model.matchers import matches_all

    _, engine = group_db
    everything = queries.list_incidents(engine, queries.IncidentQuery.parse(sort="session_key", limit=1000)).items
    parsed = queries.parse_filter(matchers)
    expected = [
        i["session_key"]
        for i in everything
        if any(matches_all(parsed, labels) for labels in queries.incident_label_sets(i))
    ]
    page = queries.list_incidents(engine, queries.IncidentQuery.parse(filter=matchers, sort="session_key", limit=1000))
    assert [i["session_key"] for i in page.items] == expected


@pytest.mark.parametrize(
    ("matcher", "pushed"),
    [
        ('service=~"zz[a-z]"', True),
        ('service=~"db-[0-9]{1,3}"', True),
        ('service!~"db-[^m]+"', False),  # some alert of the incident not matching: Python's, per alert
        ('service=~"db-[a-z]*|"', False),  # matches "", so an alert without the label: Python's
        ('session_key!~"acme:[^:]+"', True),
        ('session_key!~"acme.*"', False),  # PostgreSQL's "." also matches a newline: NOT(~) could drop a row
        ('service=~"(?i)db"', False),
        (r'service=~"db\\d"', False),
        ('service=~"[[:alpha:]]+"', False),
    ],
)
def test_which_regexes_sql_is_given(matcher, pushed):
    """The worst case of the read API is a regex SQL is not given: every row comes back to Python."""
    from streams.audit import queries

    (m,) = queries.parse_filter(matcher)
    assert (queries._sql_condition(m, postgres=True) is not None) is pushed


def test_healthz_needs_no_token_and_says_when_the_database_is_gone(api_db):
    _, engine = api_db
    [(status, body), (v1_status, _)] = call(engine, [("/healthz", None), ("/api/v1/healthz", None)])
    assert (status, body) == (200, {"status": "ok"})
    assert v1_status == 401  # everything under /api/v1 still needs a token
    gone = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    [(status, body)] = call(gone, [("/healthz", None)])
    assert (status, body) == (503, {"status": "database unreachable"})


def test_a_severity_filter_in_another_houses_words_reads_as_opsloops(api_db):
    """amtool users type severity="critical"; the incident holds opsloop's "urgent" (which wins over the alert's
    label), so the filter found nothing. Another house's word is read as opsloop's, for = and !=."""
    _, engine = api_db
    answers = call(
        engine,
        [
            ('/api/v1/incidents?filter=severity="urgent"&sort=session_key', ADMIN),
            ('/api/v1/incidents?filter=severity="critical"&sort=session_key', ADMIN),
            ('/api/v1/incidents?filter=severity!="critical"&sort=session_key', ADMIN),
        ],
    )
    urgent, critical, other = (keys(body) for _, body in answers)
    assert critical == urgent and urgent and other == ["acme:db:db-3"]
