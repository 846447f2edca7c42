"""The silence list (read API, ``opsloop silence list``, amtool's ``silence query``) as decide sees the silences."""

from __future__ import annotations

import json

from streams.audit.queries import list_silences
from streams.audit.store import Position, migrate, write_batch
from streams.db import make_engine
from streams.ingest.scopes import Principal, Scope, authorize
from streams.model.silences import expire_event, silence_event, silence_from_json

NOW = 1_800_000_000_000
MIN = 60_000


def test_the_silence_list_applies_decides_rule_for_org_limited_events(tmp_path):
    """An org-limited event may not replace or expire a silence in force of another org (decide refuses it,
    and so does the list); once that silence has been expired, the id is free again for both."""

    def limited(event: dict, org: str) -> dict:
        authorize(Principal("team", "token", Scope(orgs=(org,), control=True)), event)  # as ingest limits it
        return event

    def created(org: str, at: int) -> dict:
        body = {
            "id": "maint-1",
            "matchers": [f'org="{org}"', 'service="db"'],
            "starts_at": at,
            "ends_at": at + 60 * MIN,
        }
        event = silence_event(silence_from_json(body), org=org, now_ms=at)
        return {**event, "event_id": f"create-{org}-{at}", "received_at": at}  # ids of their own, as ingest's

    events = [
        created("b", NOW - 30 * MIN),
        limited(created("a", NOW - 20 * MIN), "a"),  # refused: org b's silence is in force
    ]
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate(engine)
    write_batch(engine, [(Position("events.webhook", 0, i), e) for i, e in enumerate(events)])
    [listed] = list_silences(engine, NOW)
    assert listed["org"] == "b" and 'org="b"' in listed["matchers"]

    expired = {**expire_event("maint-1", org="b", now_ms=NOW - 10 * MIN), "received_at": NOW - 10 * MIN}
    later = [expired, limited(created("a", NOW - 5 * MIN), "a")]
    write_batch(engine, [(Position("events.webhook", 0, 10 + i), e) for i, e in enumerate(later)])
    [listed] = list_silences(engine, NOW)
    assert listed["org"] == "a" and listed["state"] == "active"  # the id was free again, as decide sees it
    assert json.loads(later[1]["payload"]["body_json"])["org"] == "a"


def test_a_reader_held_to_its_orgs_sees_the_silences_that_mute_its_alerts(tmp_path):
    """An operator's silence (its matchers name no org, so it mutes every org's alerts) is recorded in the
    operator's org: an org's user saw "silenced by silence …" on its incident and found it in no list."""

    def made(sid: str, org: str, matchers: list[str]) -> dict:
        body = {"id": sid, "matchers": matchers, "starts_at": NOW - MIN, "ends_at": NOW + 60 * MIN}
        event = silence_event(silence_from_json(body), org=org, now_ms=NOW - MIN)
        return {**event, "event_id": f"create-{sid}", "received_at": NOW - MIN}

    events = [
        made("everyone", "default", ['service="allorgs"']),  # an operator's, no org matcher
        made("a-and-c", "default", ['org=~"a|c"', 'service="x"']),
        made("only-b", "b", ['org="b"', 'service="db"']),
        made("own", "a", ['org="a"', 'service="web"']),
    ]
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate(engine)
    write_batch(engine, [(Position("events.webhook", 0, i), e) for i, e in enumerate(events)])
    assert {s["id"] for s in list_silences(engine, NOW, orgs=frozenset({"a"}))} == {"everyone", "a-and-c", "own"}
    assert {s["id"] for s in list_silences(engine, NOW, orgs=frozenset({"b"}))} == {"everyone", "only-b"}
    assert len(list_silences(engine, NOW)) == 4
