"""The Avro codec: single-object framing, schema evolution, and clear failures."""

from __future__ import annotations

import copy
import json
import re

import pytest

from streams.kafka.codec import (
    MAGIC,
    SCHEMAS_DIR,
    BadHeaderError,
    Codec,
    CodecError,
    UnknownSchemaError,
    default_codec,
    schema_fingerprint,
)


def event(**overrides):
    base = {
        "event_id": "e-1",
        "session_key": "acme:HostHighCpuLoad:web-1",
        "kind": "telemetry",
        "type": "alert.firing",
        "source": "alertmanager",
        "org": "acme",
        "occurred_at": 1_700_000_000_000,
        "received_at": 1_700_000_000_500,
        "labels": {"alertname": "HostHighCpuLoad", "severity": "warning"},
        "annotations": {"summary": "CPU above 80%"},
        "payload": {
            "status": "firing",
            "starts_at": 1_700_000_000_000,
            "ends_at": None,
            "generator_url": "http://prom/graph?g0.expr=up",
            "fingerprint": "abc",
            "metric": None,
            "value": None,
        },
    }
    base.update(overrides)
    return base


def test_header_is_single_object_encoding_with_crc64_fingerprint():
    codec = default_codec()
    data = codec.encode("opsloop.Event", event())
    assert data[:2] == MAGIC == b"\xc3\x01"
    assert data[2:10] == codec.current("opsloop.Event").fingerprint


def test_fingerprint_matches_the_avro_spec_test_vector():
    # Avro spec: the CRC-64-AVRO fingerprint of "null" is 0x63dd24e7cc258f8a,
    # written little-endian in the single-object header.
    assert schema_fingerprint("null") == (0x63DD24E7CC258F8A).to_bytes(8, "little")


@pytest.mark.parametrize(
    "kind,payload",
    [
        ("telemetry", {"status": "", "metric": "node_load1", "value": 3.5}),
        ("webhook", {"provider": "github", "action": "opened", "subject": "acme/api#12"}),
        ("timer", {"timer_id": "esc-1", "purpose": "escalate", "due_at": 5, "step": 1, "data": {"r": "oncall"}}),
        (
            "scan",
            {
                "scan_id": "s1",
                "scan_type": "drift",
                "config_id": "c1",
                "status": "findings",
                "findings": [{"resource": "aws_s3_bucket.logs", "change_type": "update"}],
            },
        ),
        ("telemetry", None),
    ],
)
def test_every_payload_branch_round_trips(kind, payload):
    codec = default_codec()
    decoded = codec.decode(codec.encode("opsloop.Event", event(kind=kind, payload=payload)), expect="opsloop.Event")
    assert decoded["kind"] == kind
    if payload is None:
        assert decoded["payload"] is None
    else:
        for key, value in payload.items():
            if key == "findings":
                assert decoded["payload"]["findings"][0]["resource"] == value[0]["resource"]
            else:
                assert decoded["payload"][key] == value


def test_older_writer_schema_is_resolved_by_the_newer_reader():
    """A record written by an older producer (no session_rule, no org, no annotations)
    decodes with the current schema, the missing fields taking their defaults."""
    current = json.loads((SCHEMAS_DIR / "opsloop.Event.avsc").read_text())
    older = copy.deepcopy(current)
    older["fields"] = [f for f in older["fields"] if f["name"] not in ("session_rule", "org", "annotations")]

    writer = Codec()
    writer.register(older)
    old_record = {k: v for k, v in event().items() if k not in ("session_rule", "org", "annotations")}
    data = writer.encode("opsloop.Event", old_record)

    reader = Codec().load_dir(SCHEMAS_DIR)
    with pytest.raises(UnknownSchemaError):
        reader.decode(data)  # the reader has never seen that version
    reader.register(older, current=False)  # what schemas/history/ does for real
    decoded = reader.decode(data, expect="opsloop.Event")
    assert decoded["org"] == "default"
    assert decoded["session_rule"] == ""
    assert decoded["annotations"] == {}
    assert decoded["labels"] == old_record["labels"]


def test_every_schema_in_history_resolves_to_the_current_schema():
    codec = default_codec()
    for version in codec.versions():
        assert version.name in codec.names, f"{version.source}: no current schema named {version.name}"


@pytest.mark.parametrize("garbage", [b"", b"garbage", b"\xc3\x01\x00", b'{"json": true}'])
def test_garbage_is_a_named_error(garbage):
    with pytest.raises(BadHeaderError):
        default_codec().decode(garbage)


def test_unknown_fingerprint_and_truncated_body_are_named_errors():
    codec = default_codec()
    good = codec.encode("opsloop.Event", event())
    with pytest.raises(UnknownSchemaError):
        codec.decode(MAGIC + b"\x00" * 8 + good[10:])
    with pytest.raises(CodecError, match="cannot decode opsloop.Event"):
        codec.decode(good[:20])


def test_decode_refuses_a_record_of_another_type():
    codec = default_codec()
    delivery = {"effect_id": "x", "channel": "slack", "status": "delivered", "completed_at": 1}
    with pytest.raises(CodecError, match="expected a opsloop.Event record, got opsloop.Delivery"):
        codec.decode(codec.encode("opsloop.Delivery", delivery), expect="opsloop.Event")


def test_encode_error_names_the_schema():
    with pytest.raises(CodecError, match="cannot encode opsloop.Event"):
        default_codec().encode("opsloop.Event", {"event_id": 5})


def test_every_version_hands_fastavro_a_marked_parse_so_it_is_not_reparsed_per_call():
    # fastavro re-parses any schema without its __fastavro_parsed marker on every
    # schemaless_writer/schemaless_reader call; the codec keeps a marked parse for that.
    codec = default_codec()
    for version in codec.versions():
        assert version.runtime.get("__fastavro_parsed") is True, version.source
        assert "__named_schemas" in version.runtime
        assert "__fastavro_parsed" not in version.parsed  # the plain parse keeps the schema's own shape
        assert schema_fingerprint(version.parsed) == version.fingerprint


@pytest.mark.parametrize(
    ("value", "reason"), [(None, "no value (a null record: a tombstone)"), ("text", "not bytes: str")]
)
def test_a_tombstone_is_a_codec_error_every_reader_dead_letters(value, reason):
    """A null value (any producer can write one to any topic) raised TypeError: the projector crash-looped on
    it, the sinks agent crashed, and decide retried its batch for ever."""
    with pytest.raises(BadHeaderError, match=rf"^{re.escape(reason)}$"):
        default_codec().decode(value, expect="opsloop.Event")
