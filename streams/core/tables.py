"""The writes a decision implies besides the session state, and the context read back from them.

decide is pure, but what it decides must reach three tables other code reads: the
ticker's index of pending timers, the inhibiting alerts every session's flush
consults, and the silences. Deriving those writes in one place (here, from the
decision) and applying them through one function is what lets the decide agent and
replay's what-if keep the same tables: two copies of this logic drifted once, and
replay handed raw alert state where the agent handed routing labels, so a what-if
never inhibited across sessions.

Tables are plain mutable mappings here (faust tables in the worker, dicts in replay).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from streams.model.silences import (
    SILENCE_CREATED,
    SILENCE_TYPES,
    Silence,
    SilenceError,
    limited_org,
    refused_by,
    silence_from_event,
    silence_from_json,
)

if TYPE_CHECKING:
    from streams.core.decide import Context
    from streams.core.inhibition import InhibitorIndex

log = logging.getLogger(__name__)

Table = MutableMapping[str, Any]


@dataclass(frozen=True)
class SilenceChange:
    """A silence to keep (``value``: its canonical JSON) or to forget (``value`` None)."""

    silence_id: str
    value: str | None


@dataclass(frozen=True)
class Writes:
    """Everything a decision asks the shell to write, besides the session state itself."""

    session: str
    org: str
    timers: Mapping[str, Any]  # the session's pending timers ({}: none left)
    inhibitors: list[dict[str, str]]  # routing labels of its firing alerts an inhibit rule can take as a source
    silences: tuple[SilenceChange, ...] = ()  # from silence.created / silence.expired events, in order


def silence_change(
    event: Mapping[str, Any], current: Iterable[Silence] = ()
) -> tuple[SilenceChange | None, str, Silence | None]:
    """The silence table change a (non-duplicate) event asks for, or the reason it cannot, and the silence of
    ``current`` (the silences in force) that reason names.

    An event limited to one org (:func:`streams.model.silences.limited_org`) may not expire or replace
    (by naming its id) a silence that is not that org's own: a token of org a with ``control`` could end
    org b's silence by its id (a silence's id is a hash of its matchers and times: whoever knows those can
    name it) and so page org b during its maintenance.
    """
    if event.get("type") not in SILENCE_TYPES:
        return None, "", None
    try:
        etype, silence, sid = silence_from_event(event)
    except SilenceError as exc:
        return None, str(exc), None
    refused = refused_by(event, sid, current)
    if refused is not None:
        org = limited_org(event)
        return None, f"silence {sid} is not org {org!r}'s own; a token limited to its org may not change it", refused
    if etype == SILENCE_CREATED and silence is not None:
        return SilenceChange(sid, json.dumps(silence.to_json(), sort_keys=True)), "", None
    return SilenceChange(sid, None), "", None


def timers_entry(timers: Mapping[str, Any], partition: int, org: str) -> dict[str, Any] | None:
    """The ``timers`` index value for a session's pending timers (None: nothing pending)."""
    if not timers:
        return None
    return {"p": partition, "org": org, "t": {tid: dict(spec) for tid, spec in sorted(timers.items())}}


def apply_writes(writes: Writes, *, partition: int, timers: Table, inhibitors: Table, silences: Table) -> None:
    """Apply a decision's writes; a value already there is not written again (no changelog record)."""
    session = writes.session
    entry = timers_entry(writes.timers, partition, writes.org)
    if entry is not None:
        if timers.get(session) != entry:
            timers[session] = entry
    elif session in timers:
        del timers[session]
    if (inhibitors.get(session) or []) != writes.inhibitors:
        if writes.inhibitors:
            inhibitors[session] = writes.inhibitors
        else:
            del inhibitors[session]
    for change in writes.silences:
        if change.value is not None:
            silences[change.silence_id] = change.value
        elif change.silence_id in silences:
            del silences[change.silence_id]


class SilenceCache:
    """Parsed silences of a silences table, re-parsed only when a value changes."""

    def __init__(self) -> None:
        self._parsed: dict[str, tuple[str, Silence]] = {}

    def snapshot(self, table: Mapping[str, str]) -> tuple[Silence, ...]:
        out = []
        for sid, raw in sorted(table.items()):
            if not raw:
                continue
            cached = self._parsed.get(sid)
            if cached is None or cached[0] != raw:
                try:
                    cached = (raw, silence_from_json(json.loads(raw)))
                except (SilenceError, ValueError) as exc:
                    log.warning("ignoring an unreadable silence %s: %s", sid, exc)
                    continue
                self._parsed[sid] = cached
            out.append(cached[1])
        return tuple(out)


def context_from_tables(
    base: Context,
    *,
    silences: Mapping[str, str],
    inhibitors: Mapping[str, Any],
    cache: SilenceCache,
    index: InhibitorIndex | None = None,
    changed: Iterable[str] | None = None,
) -> Context:
    """``base`` with the silences and other sessions' inhibiting alerts the tables hold now.

    With ``index`` (kept by the caller across batches) the inhibitors are not copied:
    the index re-reads the sessions in ``changed`` (None: diffs the table) and the
    context carries it, valid until the next sync. Without, they are a fresh tuple.
    """
    if index is not None:
        index.sync(inhibitors, changed)
        return replace(base, silences=cache.snapshot(silences), inhibitors=index)
    inhibiting = (
        tuple((key, labels) for key, value in sorted(inhibitors.items()) if value for labels in value)
        if base.runbooks.routing.inhibit_rules
        else ()
    )
    return replace(base, silences=cache.snapshot(silences), inhibitors=inhibiting)
