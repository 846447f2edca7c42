"""Event validation names the field at fault; stamping keeps client ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.model.records import (
    MAX_TIME_MS,
    InvalidEventError,
    check_envelope,
    derived_id,
    stamp,
    topic_for,
    utc_text,
    validate_event,
)

GOOD = {
    "session_key": "s",
    "kind": "scan",
    "type": "scan.completed",
    "source": "scanner",
    "occurred_at": 5,
    "payload": {"scan_id": "1", "scan_type": "drift", "config_id": "c", "status": "clean"},
}


def test_a_valid_event_is_normalised():
    event = validate_event(GOOD)
    assert event["org"] == "default" and event["labels"] == {} and event["event_id"] == ""
    assert topic_for(event) == "events.scan"


@pytest.mark.parametrize(
    "change,field",
    [
        ({"kind": "metrics"}, "kind"),
        ({"session_key": None}, "session_key"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"occurred_at": True}, "occurred_at"),
        ({"labels": ["a"]}, "labels"),
        ({"labels": {"a": {"b": 1}}}, "labels.a"),
        ({"payload": "x"}, "payload"),
        ({"payload": {"status": "clean"}}, "payload.scan_id"),
        ({"type": 5}, "type"),
    ],
)
def test_invalid_events_name_the_field(change, field):
    with pytest.raises(InvalidEventError) as err:
        validate_event({**GOOD, **change})
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_missing_required_fields_are_named():
    for field in ("session_key", "kind", "type", "source", "occurred_at"):
        raw = dict(GOOD)
        del raw[field]
        with pytest.raises(InvalidEventError, match=f"^{field}: required$"):
            validate_event(raw)


def test_stamp_keeps_a_client_supplied_id_and_receive_time():
    event = validate_event({**GOOD, "event_id": "client-1", "received_at": 7})
    assert stamp(event, event_id="new", received_at=9) | {} == {**event, "event_id": "client-1", "received_at": 7}
    fresh = stamp(validate_event(GOOD), event_id="new", received_at=9)
    assert (fresh["event_id"], fresh["received_at"]) == ("new", 9)


def test_derived_ids_are_deterministic_and_separate_their_parts():
    assert derived_id("a", "b") == derived_id("a", "b")
    assert derived_id("a", "b") != derived_id("ab", "")
    assert len(derived_id("x")) == 32


@pytest.mark.parametrize("field", ["occurred_at", "received_at"])
def test_a_time_past_the_year_9999_is_refused_naming_the_field(field):
    raw = {"session_key": "s", "kind": "telemetry", "type": "alert.firing", "source": "t", "occurred_at": 1}
    assert validate_event({**raw, field: MAX_TIME_MS})[field] == MAX_TIME_MS  # 9999-12-31T23:59:59.999Z
    with pytest.raises(InvalidEventError, match=rf"^{field}: {MAX_TIME_MS + 1} is past the year 9999"):
        validate_event({**raw, field: MAX_TIME_MS + 1})
    assert datetime.fromtimestamp(MAX_TIME_MS / 1000, UTC).year == 9999


def test_a_time_no_calendar_can_name_is_shown_as_itself():
    assert utc_text(1_714_557_600_000) == "2024-05-01 10:00:00"
    assert utc_text(MAX_TIME_MS) == "9999-12-31 23:59:59"
    assert utc_text(2**62) == f"{2**62} ms"  # written before times were checked: shown, never a 500
    assert utc_text(-(2**62)) == f"{-(2**62)} ms"


def test_a_read_event_without_a_session_key_or_of_an_unknown_kind_is_refused():
    with pytest.raises(InvalidEventError, match="^session_key: required$"):
        check_envelope({"session_key": "", "kind": "telemetry", "occurred_at": 1})
    # found from outside: written straight to Kafka (ingest refuses it), an unknown kind was decided
    with pytest.raises(InvalidEventError, match="^kind: unknown kind 'nonsense'; expected one of telemetry"):
        check_envelope({"session_key": "s", "kind": "nonsense", "occurred_at": 1})
    check_envelope({"session_key": "s", "kind": "timer", "occurred_at": 1, "received_at": 0})


def test_a_list_row_shows_some_labels_cut_short_and_the_incident_page_all_of_them():
    from streams.ui.base import LIST_LABELS, LIST_VALUE_CHARS, labels_html

    labels = {f"l{i:04d}": "v" * 500 for i in range(1500)}
    row = labels_html(labels, limit=LIST_LABELS)
    assert row.count("<span>") == LIST_LABELS + 1 and row.endswith(f"<span>+{1500 - LIST_LABELS} more</span>")
    assert f"l0000={'v' * LIST_VALUE_CHARS}…</span>" in row and len(row) < 6_000
    assert labels_html(labels).count("<span>") == 1500  # the incident's own page: every label, whole
    assert labels_html({"b": "<i>", "a": "1"}, limit=LIST_LABELS) == "<span>a=1</span><span>b=&lt;i&gt;</span>"
