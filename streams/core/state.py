"""The session state decide folds, typed, and how older versions are read.

The state stays JSON-shaped data (replay holds it as is, the decide agent's table keeps it
marshal-encoded: :func:`encode_state`, and older changelogs hold it as JSON), so the types
are TypedDicts: mypy checks every key decide reads or writes, and nothing changes at run time. A session is a group, like an
Alertmanager ``group_by``:

- ``alerts``: what fires in the session, per alert key (:class:`AlertState`);
- ``status`` idle | firing | resolved, and ``episode``, which counts firings so timer
  ids and dedupe keys of one incident never collide with the next one's;
- ``group``: when the episode began, when it last notified and what (a content hash);
- ``audience``: receivers notified this episode (they get updates and the resolve);
- ``acked``, ``escalation`` (a chain in progress), ``flap`` (status-change times, the
  flapping flag), ``consecutive`` (autonomous messages since the last reset),
  ``cooldowns`` (last trigger notification per runbook), ``dedupe`` (key → last time),
  ``timers`` (pending), ``cond`` (condition triggers), ``approval`` (remediations
  waiting for a human), ``cron`` (last slot of a schedule session), ``runbook`` (of the
  episode, from its first firing on), ``unmatched_told`` (the episode in which the
  default receiver was told of an event type nothing handles; see :mod:`streams.core.fates`).

Versions: 1 kept only seen ids; 2 had short keys (``s``, ``sev``, ``cat``, ``rb``,
``esc``, ``cool``, ``cap``, ``src``, ``eid``); 3 kept ``seen`` as a list of the event ids
themselves; 4 is this, where ``seen`` is one string of fixed-width digests
(:func:`seen_token`). :func:`upgrade` reads any of them, so a worker of this version
continues from a changelog written by an older one. A worker of an older version does not
read a newer state (it starts the session afresh): roll workers forward, not back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import marshal
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict, cast

VERSION = 4
SEEN_TOKEN_CHARS = 11  # base64 of an 8-byte BLAKE2b digest, unpadded

Status = Literal["idle", "firing", "resolved"]


class AlertState(TypedDict, total=False):
    status: Literal["firing", "resolved"]
    severity: str
    category: str
    runbook: str
    title: str
    labels: dict[str, str]
    type: str
    source: str
    kind: str
    url: str
    body: str
    event_id: str
    inferred: str  # what the classifier inferred, with its confidence (absent when the sender stated it)
    at: int  # when the status last changed
    first: int  # when it first fired in this episode
    arrived: int  # when its last event reached opsloop (messages.arrival): silences are checked from then on
    links: list[list[str]]  # its own runbook / dashboard links, [label, url] (messages.annotation_links); absent: none


class GroupState(TypedDict):
    first: int | None  # when the episode began
    sent: int | None  # when the group last notified
    hash: str | None  # what it last said (content hash of the notified alerts)


class EscalationState(TypedDict):
    runbook: str
    start: int
    next: int  # the next step of the chain


class FlapState(TypedDict):
    flips: list[int]
    on: bool
    last: int | None
    noticed: bool


class TimerSpec(TypedDict):
    at: int
    purpose: str
    step: int
    data: dict[str, str]


class ConditionState(TypedDict):
    since: int | None
    on: bool


class CronState(TypedDict, total=False):
    last: int
    running_until: int


MAX_OVERFLOW_KEPT = 1000  # alerts past the session's cap remembered by key, to count each once


class SessionState(TypedDict):
    v: int
    seen: str  # the last event ids folded (producers retry), as SEEN_TOKEN_CHARS-wide tokens (seen_token)
    clock: int  # the session's event time: the largest occurred_at folded
    status: Status
    episode: int
    alerts: dict[str, AlertState]
    overflow: int  # alerts past MAX_ALERTS, counted not stored (len(overflow_keys))
    overflow_keys: list[str]  # their keys, up to incident.MAX_OVERFLOW_KEPT (absent in a state of before)
    group: GroupState
    audience: list[str]
    first_audience: list[str]
    acked: bool
    escalation: EscalationState | None
    flap: FlapState
    consecutive: int
    cooldowns: dict[str, int]
    dedupe: dict[str, int]
    timers: dict[str, TimerSpec]
    cond: dict[str, ConditionState]
    approval: list[int]
    cron: CronState
    runbook: NotRequired[str]  # the runbook of the episode, set when it begins firing
    unmatched_told: NotRequired[int]  # the episode in which the default receiver heard of an unmatched type


def new_state() -> SessionState:
    return {
        "v": VERSION,
        "seen": "",
        "clock": 0,
        "status": "idle",
        "episode": 0,
        "alerts": {},
        "overflow": 0,
        "overflow_keys": [],
        "group": {"first": None, "sent": None, "hash": None},
        "audience": [],
        "first_audience": [],
        "acked": False,
        "escalation": None,
        "flap": {"flips": [], "on": False, "last": None, "noticed": False},
        "consecutive": 0,
        "cooldowns": {},
        "dedupe": {},
        "timers": {},
        "cond": {},
        "approval": [],
        "cron": {},
    }


# How the decide agent keeps a state in its ``sessions`` table (and so on the table's changelog):
# a marker byte, then marshal's encoding (version 4, every Python 3 since 3.4 reads it). It is
# written once per session per batch and read back into a fresh object, which is the one copy
# decide folds into; faust's JSON dump of the state (the slowest part of a table write) and
# the separate marshal copy go. Values written before are JSON, which never starts with the marker.
STATE_MARK = b"\x00"
MARSHAL_VERSION = 4


def encode_state(state: Mapping[str, Any]) -> bytes:
    """A state as the sessions table keeps it."""
    return STATE_MARK + marshal.dumps(cast("dict[str, Any]", state), MARSHAL_VERSION)


def decode_state(value: Any) -> tuple[Mapping[str, Any] | None, bool]:
    """A sessions-table value as a state, and whether that state is a fresh object (the caller's to fold into).

    ``value`` is what :func:`encode_state` wrote, the JSON bytes of an older changelog record,
    None (no state yet), or a mapping (a table that holds states as they are), which is not fresh.
    """
    if value is None:
        return None, False
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if raw[:1] == STATE_MARK:
            return cast("dict[str, Any]", marshal.loads(raw[1:])), True
        return cast("dict[str, Any]", json.loads(raw)), True
    return cast("Mapping[str, Any]", value), False


class DecodedStates:
    """The states this worker last wrote, decoded, so the next batch of a session skips the decode.

    Most of a storm's events belong to sessions folded a batch or two before, and decoding
    the table's bytes again (``marshal.loads`` of ~3 KB) cost about a tenth of a worker's
    CPU per event. An entry is the bytes written and the state they encode; it is used only
    while the table still holds those very bytes (identity, not equality: a row replaced by
    recovery, a rebalance or another writer is decoded afresh), and it is *taken*: the fold
    owns it and changes it in place, and a fold that fails leaves no entry behind, so the
    next read decodes the table. Bounded: the least recently written sessions go first.
    """

    def __init__(self, limit: int = 5000) -> None:
        self.limit = limit
        self._states: dict[str, tuple[Any, dict[str, Any]]] = {}

    def take(self, session: str, value: Any) -> tuple[Mapping[str, Any] | None, bool]:
        """What :func:`decode_state` would return for the table's ``value``, decoded once per write."""
        kept = self._states.pop(session, None)
        if kept is not None and kept[0] is value:
            return kept[1], True
        return decode_state(value)

    def keep(self, session: str, value: Any, state: Mapping[str, Any]) -> None:
        """``value`` (the bytes just written for ``session``) encodes ``state``, which nothing else holds now."""
        if self.limit <= 0:
            return
        states = self._states
        states.pop(session, None)
        states[session] = (value, cast("dict[str, Any]", state))
        if len(states) > self.limit:
            del states[next(iter(states))]


def seen_token(event_id: str) -> str:
    """What ``seen`` keeps of an event id: 11 characters, whatever the id's length.

    Event ids are 32 to 100+ characters (a timer's names its session); a session kept up
    to 64 of them, a third of its changelog record. 64 bits of BLAKE2b make a false
    "duplicate" about one in 3e17 per event.
    """
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return base64.b64encode(digest)[:SEEN_TOKEN_CHARS].decode()


def has_seen(seen: str, token: str) -> bool:
    """Whether ``token`` (:func:`seen_token`) is among the tokens of ``seen`` (at a token boundary, not just anywhere)."""
    at = seen.find(token)
    while at != -1:
        if at % SEEN_TOKEN_CHARS == 0:
            return True
        at = seen.find(token, at + 1)
    return False


def remember(seen: str, token: str, kept: int) -> str:
    """``seen`` with ``token`` (:func:`seen_token`) appended, keeping the last ``kept``."""
    return (seen + token)[-kept * SEEN_TOKEN_CHARS :]


def _seen_of(ids: Any) -> str:
    """A version 1-3 ``seen`` (a list of event ids) as this version keeps it."""
    return "".join(seen_token(str(i)) for i in ids or ())


def clone(state: Mapping[str, Any]) -> SessionState:
    """A deep copy of JSON-shaped state; marshal is several times faster than copy.deepcopy."""
    return cast(SessionState, marshal.loads(marshal.dumps(cast("dict[str, Any]", state))))


_ALERT_KEYS_V2 = {
    "s": "status",
    "sev": "severity",
    "cat": "category",
    "rb": "runbook",
    "src": "source",
    "eid": "event_id",
}
_SESSION_KEYS_V2 = {"rb": "runbook", "esc": "escalation", "cool": "cooldowns", "cap": "consecutive"}


def upgrade(state: Mapping[str, Any] | None) -> SessionState:
    """A private copy of ``state`` in this version's shape (a fresh state for None)."""
    if not state:
        return new_state()
    version = state.get("v")
    if version == VERSION:
        return clone(state)
    if version == 3:
        out3 = cast("dict[str, Any]", clone(state))
        out3["seen"], out3["v"] = _seen_of(out3["seen"]), VERSION
        return cast(SessionState, out3)
    if version == 2:
        old = clone(state)
        out: dict[str, Any] = {_SESSION_KEYS_V2.get(k, k): v for k, v in old.items()}
        if out.get("escalation"):
            out["escalation"] = {_SESSION_KEYS_V2.get(k, k): v for k, v in out["escalation"].items()}
        out["alerts"] = {
            key: {_ALERT_KEYS_V2.get(k, k): v for k, v in alert.items()} for key, alert in out["alerts"].items()
        }
        out["seen"], out["v"] = _seen_of(out.get("seen")), VERSION
        return cast(SessionState, out)
    fresh = new_state()  # the first fold's state: keep what it knew (seen ids)
    fresh["seen"] = _seen_of(state.get("seen"))
    return fresh
