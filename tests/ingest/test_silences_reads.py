"""The silence API's reads without a broker: the GettableSilence shape, Alertmanager's filter and order,
and the audit store unreadable (a 503 with the reason, no file created, no password)."""

from __future__ import annotations

import asyncio

import pytest

from streams.ingest.audit_reads import AuditReads, StoreUnavailable, readable_orgs
from streams.ingest.scopes import Scope
from streams.ingest.silences_api import alertmanager_order, gettable, matches_filter
from streams.model.matchers import parse_matcher

HOUR = 3_600_000
T = 1_800_000_000_000  # 2027-01-15T08:00:00Z


def stored(sid: str, matchers: list[str], *, starts: int = T, ends: int = T + HOUR, expired: int | None = None,
           state: str = "active") -> dict:  # fmt: skip
    return {
        "id": sid,
        "matchers": matchers,
        "starts_at": starts,
        "ends_at": ends,
        "created_by": "alice",
        "comment": "maintenance",
        "kind": "silence",
        "org": "a",
        "expired_at": expired,
        "updated_at": expired or starts,
        "state": state,
    }


def test_a_stored_silence_reads_as_alertmanagers_gettable_silence_and_an_early_expiry_is_its_end():
    early = gettable(stored("s1", ['service="db"', 'alertname=~"Db.*"', 'team!~"x|y"'], expired=T + 60_000,
                            state="expired"))  # fmt: skip
    assert early == {
        "id": "s1",
        "status": {"state": "expired"},
        "updatedAt": "2027-01-15T08:01:00.000Z",
        "matchers": [
            {"name": "service", "value": "db", "isRegex": False, "isEqual": True},
            {"name": "alertname", "value": "Db.*", "isRegex": True, "isEqual": True},
            {"name": "team", "value": "x|y", "isRegex": True, "isEqual": False},
        ],
        "startsAt": "2027-01-15T08:00:00.000Z",
        "endsAt": "2027-01-15T08:01:00.000Z",
        "createdBy": "alice",
        "comment": "maintenance",
    }
    # a pending silence expired before its start ends (and so starts) at the expiry, as in Alertmanager
    pending = gettable(stored("s2", ['service="db"'], starts=T + HOUR, ends=T + 2 * HOUR, expired=T, state="expired"))
    assert pending["startsAt"] == pending["endsAt"] == "2027-01-15T08:00:00.000Z"


@pytest.mark.parametrize(
    ("filters", "selected"),
    [
        ([], True),
        (['service="db"'], True),
        (['service="web"'], False),
        (['service=~"d.*"'], True),
        (['team="infra"'], False),  # the silence names no team
        (['team=""'], True),  # an empty value holds when the silence has no such matcher
        (['service!=""'], True),
        (['team!=""'], False),
        (['service="db"', 'alertname="Db.*"'], True),  # a regex matcher's value is read as written
    ],
)
def test_the_filter_is_alertmanagers_on_the_silences_matchers_read_as_labels(filters, selected):
    silence = stored("s", ['service="db"', 'alertname=~"Db.*"'])
    assert matches_filter(silence, [parse_matcher(f) for f in filters]) is selected


def test_silences_are_listed_active_by_end_then_pending_by_start_then_expired_newest_first():
    rows = [
        stored("expired-old", ['s="a"'], ends=T - 2 * HOUR, state="expired"),
        stored("pending-late", ['s="a"'], starts=T + 5 * HOUR, ends=T + 6 * HOUR, state="pending"),
        stored("active-long", ['s="a"'], ends=T + 9 * HOUR),
        stored("expired-new", ['s="a"'], ends=T - HOUR, state="expired"),
        stored("pending-soon", ['s="a"'], starts=T + 2 * HOUR, ends=T + 9 * HOUR, state="pending"),
        stored("active-short", ['s="a"'], ends=T + HOUR),
    ]
    ordered = [s["id"] for s in sorted(map(gettable, rows), key=alertmanager_order)]
    assert ordered == ["active-short", "active-long", "pending-soon", "pending-late", "expired-new", "expired-old"]


def test_a_token_reads_its_scopes_orgs_and_an_any_org_scope_every_org():
    assert readable_orgs(Scope(orgs=("a", "b"), control=True)) == frozenset({"a", "b"})
    assert readable_orgs(Scope(orgs=("*",), control=True)) is None


def test_an_audit_store_that_is_not_there_is_a_503_saying_so_and_no_file_is_created(tmp_path):
    missing = tmp_path / "nowhere" / "audit.db"
    with pytest.raises(StoreUnavailable) as caught:
        asyncio.run(AuditReads(f"sqlite:///{missing}").silences(None))
    assert caught.value.status == 503 and caught.value.headers == {"Retry-After": "5"}
    assert "no audit store yet" in caught.value.reason and "opsloop projector" in caught.value.reason
    assert not missing.exists() and not missing.parent.exists()

    unreachable = AuditReads("postgresql+psycopg://opsloop:hunter2-secret@127.0.0.1:1/opsloop")
    with pytest.raises(StoreUnavailable) as caught:
        asyncio.run(unreachable.silences(frozenset({"a"})))
    assert "cannot be read from the audit store (OperationalError" in caught.value.reason
    assert "hunter2" not in caught.value.reason

    for url in ("mysql://u:hunter2-secret@db/x", "u:hunter2-secret@db"):
        with pytest.raises(StoreUnavailable) as caught:
            asyncio.run(AuditReads(url).silences(None))
        assert "cannot be opened" in caught.value.reason and "hunter2" not in caught.value.reason
