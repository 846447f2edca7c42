"""Other sessions' inhibiting alerts, indexed so a flush looks its sources up instead of scanning them.

The inhibition gate asks, for a target alert and each inhibit rule whose target
matchers it meets: is there a firing source alert of that rule (another session's,
or this session's own) with the same values of the rule's ``equal`` labels? Over a
flat list that is a scan of every firing source per target per flush (18,400
sources made a flush cost ~1.9 ms), and the list itself was rebuilt per batch.

:class:`InhibitorIndex` keys each source by ``(rule index, its equal-label values)``
for each rule whose source matchers it meets, so the question is one dict lookup.
Entries in a bucket keep the order of the flat tuple the context used to carry
(session key, then position in that session's list), and the lookup returns the
first that is not the asking session's own and not the target itself: the same
source the scan found, hence the same gate, reason and recorded input.

The index is kept up to date per session (:meth:`InhibitorIndex.set`, or
:meth:`InhibitorIndex.sync` with the keys that changed); replay and tests, which
hand decide a tuple, get one built from the tuple (:func:`as_index`).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from streams.model.matchers import matches_all

Labels = Mapping[str, str]
Entry = tuple[tuple[Any, ...], str, Labels]  # (order, session key, labels)


def _order(entry: Entry) -> tuple[Any, ...]:
    return entry[0]


class InhibitorIndex:
    """(rule index, equal-label values) → the firing sources of that rule with those values, in context order.

    Iterating it yields ``(session key, labels)`` in the order the context's tuple had,
    so code that reads ``Context.inhibitors`` as a sequence sees the same pairs.
    """

    def __init__(self, rules: Sequence[Any]) -> None:
        self.rules = tuple(rules)
        self._sessions: dict[str, Any] = {}  # session key -> the table value indexed for it
        self._entries: dict[str, list[tuple[Entry, list[tuple[int, tuple[Any, ...]]]]]] = {}
        self._buckets: dict[tuple[int, tuple[Any, ...]], list[Entry]] = {}
        self._count = 0

    # -- building ----------------------------------------------------------------------
    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, Labels]], rules: Sequence[Any]) -> InhibitorIndex:
        """An index over a context tuple of ``(session key, labels)``, keeping its order."""
        index = cls(rules)
        grouped: dict[str, list[tuple[int, Labels]]] = {}
        for n, (key, labels) in enumerate(pairs):
            grouped.setdefault(key, []).append((n, labels))
        for key, items in grouped.items():
            index._add(key, [((n,), labels) for n, labels in items])
            index._sessions[key] = None
        return index

    def set(self, session: str, value: Sequence[Labels] | None) -> None:
        """Re-index one session from its table value (its inhibiting alerts' labels; None or empty: none).

        A value equal to the one indexed changes nothing and is not re-indexed: every worker
        reads the inhibitors changelog back, its own writes included, so each local write
        comes back once more as an equal value (a new object). Re-indexing it anyway
        replaced a session's index entries with equal new ones; after a storm that was tens
        of thousands of sessions at once (a 0.2 s burst, then a young collection of 240,000
        objects). Table values are replaced, never changed in place (a faust table writes its
        changelog on assignment only), so equality says the index is already right.
        """
        indexed = self._sessions.get(session)
        if value and indexed and value == indexed:
            self._sessions[session] = value  # the diff in :meth:`sync` compares by identity
            return
        if session in self._sessions:
            self._remove(session)
            del self._sessions[session]
        if value and self.rules:
            self._add(session, [((session, i), labels) for i, labels in enumerate(value)])
            self._sessions[session] = value

    def sync(self, table: Mapping[str, Any], changed: Iterable[str] | None = None) -> int:
        """Bring the index to what ``table`` holds: only the ``changed`` keys, or (None) a diff of the
        whole table by value identity. Returns how many sessions were handed to :meth:`set` (one whose
        value equals what is indexed is counted, though :meth:`set` leaves its entries as they are)."""
        if not self.rules:
            return 0
        n = 0
        if changed is not None:
            for key in changed:
                self.set(key, table.get(key))
                n += 1
            return n
        for key in [k for k in self._sessions if k not in table]:
            self.set(key, None)
            n += 1
        for key, value in table.items():
            if value is not self._sessions.get(key):
                if key in self._sessions or value:
                    self.set(key, value)
                    n += 1
        return n

    def _add(self, session: str, items: list[tuple[tuple[Any, ...], Labels]]) -> None:
        placed = []
        for order, labels in items:
            entry: Entry = (order, session, labels)
            keys = []
            for r, rule in enumerate(self.rules):
                if not matches_all(rule.source, labels):
                    continue
                bucket_key = (r, tuple(labels.get(name, "") for name in rule.equal))
                insort(self._buckets.setdefault(bucket_key, []), entry, key=_order)
                keys.append(bucket_key)
            placed.append((entry, keys))
            self._count += 1
        self._entries[session] = placed

    def _remove(self, session: str) -> None:
        for entry, keys in self._entries.pop(session, []):
            self._count -= 1
            for bucket_key in keys:
                bucket = self._buckets[bucket_key]
                at = bisect_left(bucket, entry[0], key=_order)
                if at < len(bucket) and bucket[at] is entry:
                    del bucket[at]
                else:  # pragma: no cover - orders are unique; kept for safety
                    bucket.remove(entry)
                if not bucket:
                    del self._buckets[bucket_key]

    # -- the lookup --------------------------------------------------------------------
    def first(
        self, rule_index: int, values: tuple[Any, ...], session: str, target: Labels
    ) -> tuple[str, Labels] | None:
        """The first source of rule ``rule_index`` with these equal-label values, not of ``session``
        and not the target alert itself."""
        for _, key, labels in self._buckets.get((rule_index, values), ()):
            if key != session and labels != target:
                return key, labels
        return None

    # -- the sequence it stands for ----------------------------------------------------
    def __iter__(self) -> Iterator[tuple[str, Labels]]:
        entries = [entry for placed in self._entries.values() for entry, _ in placed]
        entries.sort(key=_order)
        for _, key, labels in entries:
            yield key, labels

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __repr__(self) -> str:
        return f"InhibitorIndex({self._count} sources of {len(self._entries)} sessions, {len(self._buckets)} buckets)"


class IndexedSources:
    """The sources one session's flush may be inhibited by: other sessions' (indexed) and its own firing alerts."""

    __slots__ = ("index", "session", "own")

    def __init__(self, index: InhibitorIndex, session: str, own: Sequence[Labels]) -> None:
        self.index, self.session, self.own = index, session, list(own)

    def find(self, labels: Labels, rules: Sequence[Any]) -> tuple[int, str | None, Labels] | None:
        """(rule index, session key or None for this session's own, source labels) of the first
        source that inhibits ``labels``, in the order :func:`streams.core.gates.inhibition_gate` scans."""
        for r, rule in enumerate(rules):
            if not matches_all(rule.target, labels):
                continue
            found = self.index.first(r, tuple(labels.get(name, "") for name in rule.equal), self.session, labels)
            if found is not None:
                return r, found[0], found[1]
            for source in self.own:
                if source == labels or not matches_all(rule.source, source):
                    continue
                if all(source.get(name, "") == labels.get(name, "") for name in rule.equal):
                    return r, None, source
        return None


_last: tuple[Any, Any, InhibitorIndex] | None = None


def as_index(inhibitors: Any, rules: Sequence[Any]) -> InhibitorIndex:
    """``Context.inhibitors`` as an index: itself when it is one over these rules, else built from
    the tuple (once per tuple: contexts replaced per event share it)."""
    global _last
    if isinstance(inhibitors, InhibitorIndex) and (inhibitors.rules is rules or inhibitors.rules == tuple(rules)):
        return inhibitors
    if _last is not None and _last[0] is inhibitors and _last[1] is rules:
        return _last[2]
    index = InhibitorIndex.from_pairs(inhibitors, rules)
    if isinstance(inhibitors, tuple):  # immutable: safe to reuse while the same object comes back
        _last = (inhibitors, rules, index)
    return index
