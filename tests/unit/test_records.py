"""Event validation names the field at fault; stamping keeps client ids."""

from __future__ import annotations

import pytest

from streams.model.records import InvalidEventError, derived_id, stamp, topic_for, validate_event

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
