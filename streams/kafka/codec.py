"""Avro codec: schemaless bodies behind the Avro single-object header.

Every record on an opsloop topic is ``0xC3 0x01`` + the writer schema's 8-byte
CRC-64-AVRO fingerprint + the schemaless Avro body. The fingerprint is what lets a
newer reader resolve a record an older producer wrote: the codec keeps every known
schema version (``schemas/*.avsc`` and ``schemas/history/*.avsc``) indexed by
fingerprint, and decodes with the writer's schema resolved to the current reader
schema of the same name. Schemas are parsed once, when the codec is built, never
per message: fastavro re-parses any schema that lacks its ``__fastavro_parsed``
marker on every ``schemaless_writer``/``schemaless_reader`` call, so each version
keeps two parses: ``parsed`` (plain, for fingerprints and for reading the schema's
shape) and ``runtime`` (marked, with its named types, handed to fastavro).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from streams.errors import CorruptDataError
from streams.settings import ROOT

MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8

SCHEMAS_DIR = ROOT / "schemas"


class CodecError(CorruptDataError):
    """A record could not be encoded or decoded; the message says why."""


class BadHeaderError(CodecError):
    """The bytes do not start with the Avro single-object header."""


class UnknownSchemaError(CodecError):
    """The header names a writer schema this codec does not know."""


class SchemaNotFoundError(CodecError):
    """No schema of that name is registered."""


@dataclass(frozen=True)
class SchemaVersion:
    name: str
    fingerprint: bytes
    parsed: Any
    source: str
    runtime: Any = None
    """The parse handed to fastavro: carries ``__fastavro_parsed``/``__named_schemas``, so
    fastavro takes it as is instead of re-parsing the schema on every call."""


def schema_fingerprint(parsed: Any) -> bytes:
    """The 8 bytes (little-endian CRC-64-AVRO) that single-object encoding puts in the header."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


class Codec:
    """Encodes and decodes opsloop records; one instance per process is enough."""

    def __init__(self) -> None:
        self._current: dict[str, SchemaVersion] = {}
        self._by_fp: dict[bytes, SchemaVersion] = {}

    # -- registration -------------------------------------------------------
    def register(
        self, schema: Mapping[str, Any] | str, *, current: bool = True, source: str = "<inline>"
    ) -> SchemaVersion:
        """Register a schema. ``current=False`` adds a readable older version only."""
        raw = json.loads(schema) if isinstance(schema, str) else dict(schema)
        parsed = parse_schema(raw, _write_hint=False, _force=True)
        name = parsed["name"] if isinstance(parsed, dict) else str(parsed)
        runtime = parse_schema(raw, {}, _force=True)
        version = SchemaVersion(
            name=name, fingerprint=schema_fingerprint(parsed), parsed=parsed, source=source, runtime=runtime
        )
        self._by_fp.setdefault(version.fingerprint, version)
        if current:
            self._current[name] = version
        return version

    def load_dir(self, directory: Path = SCHEMAS_DIR) -> Codec:
        """Register ``directory/*.avsc`` as current and ``directory/history/*.avsc`` as readable."""
        for path in sorted(directory.glob("*.avsc")):
            self.register(path.read_text(), current=True, source=str(path))
        history = directory / "history"
        if history.is_dir():
            for path in sorted(history.glob("*.avsc")):
                self.register(path.read_text(), current=False, source=str(path))
        return self

    # -- lookups ------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return sorted(self._current)

    def versions(self) -> list[SchemaVersion]:
        return list(self._by_fp.values())

    def current(self, name: str) -> SchemaVersion:
        try:
            return self._current[name]
        except KeyError:
            raise SchemaNotFoundError(f"no schema named {name!r}; known: {', '.join(self.names)}") from None

    # -- the codec ----------------------------------------------------------
    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        version = self.current(name)
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(version.fingerprint)
        try:
            schemaless_writer(buf, version.runtime, record)
        except Exception as exc:  # fastavro raises ValueError/TypeError/KeyError with field context
            raise CodecError(f"cannot encode {name}: {exc}") from exc
        return buf.getvalue()

    def writer_of(self, data: bytes) -> SchemaVersion:
        """The writer schema named by a record's header."""
        if not isinstance(data, bytes | bytearray | memoryview):
            # a tombstone (any producer can write one to any topic): a dead letter like any bad record; a
            # TypeError here crashed the projector and the sinks agent and stalled decide's batch
            raise BadHeaderError(
                "no value (a null record: a tombstone)" if data is None else f"not bytes: {type(data).__name__}"
            )
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise BadHeaderError(
                f"not an Avro single-object record (first bytes {bytes(data[:4])!r}, length {len(data)})"
            )
        fp = bytes(data[2:HEADER_LEN])
        try:
            return self._by_fp[fp]
        except KeyError:
            raise UnknownSchemaError(f"unknown writer schema fingerprint {fp.hex()}") from None

    def decode(self, data: bytes, expect: str | None = None) -> dict[str, Any]:
        """Decode a record, resolving an older writer schema to the current reader schema.

        ``expect`` names the schema the caller reads (e.g. ``opsloop.Event``); a record
        of another type is an error rather than a silently wrong dict.
        """
        writer = self.writer_of(data)
        reader = self._current.get(writer.name)
        if expect is not None and writer.name != expect:
            raise CodecError(f"expected a {expect} record, got {writer.name}")
        reader_parsed = None if reader is None or reader.fingerprint == writer.fingerprint else reader.runtime
        try:
            # a record schema: the datum is a dict
            return cast(
                "dict[str, Any]",
                schemaless_reader(io.BytesIO(memoryview(data)[HEADER_LEN:]), writer.runtime, reader_parsed),
            )
        except Exception as exc:  # truncated or corrupt body
            raise CodecError(f"cannot decode {writer.name} body: {type(exc).__name__}: {exc}") from exc


_default: Codec | None = None


def default_codec() -> Codec:
    """The process-wide codec over the repository's schemas/, parsed once."""
    global _default
    if _default is None:
        _default = Codec().load_dir(SCHEMAS_DIR)
    return _default
