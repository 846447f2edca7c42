"""The pending timers ordered by due time, so a tick touches only what is due.

:func:`streams.core.timers.due_timers` answers "which timers are due on these
partitions" by reading every row of the ``timers`` table; after a storm that is every
session, every tick. :class:`TimerIndex` answers the same from a heap per partition of
``(at, session, timer id)``, fed with the rows that changed (:meth:`TimerIndex.sync`).

A heap item is checked against the session's current row when it comes up (a timer
rescheduled, fired or moved to another partition leaves a stale item, dropped then),
and the heaps are rebuilt when stale items outnumber live ones. A due item moves to the
partition's *candidates* and stays there while the timer is pending: the ticker
promotes it again after a pause if decide has not consumed it yet, and a partition's
clock can step back (the hybrid clock), so candidates are judged against the clock on
every tick. The answer is :func:`~streams.core.timers.due_timers`'s, in its order.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Due = tuple[str, str, str, dict[str, Any]]  # (session, org, timer id, spec), as due_timers gives them


class TimerIndex:
    """The timers table's pending timers, by partition and due time."""

    def __init__(self) -> None:
        self._rows: dict[str, Mapping[str, Any]] = {}  # session -> the table row indexed for it
        self._heaps: dict[int, list[tuple[int, str, str]]] = {}
        self._candidates: dict[int, dict[tuple[str, str], int]] = {}
        self._pending: dict[int, int] = {}  # partition -> pending timers
        self._items = 0  # heap items, live or stale
        self._live = 0  # pending timers

    # -- keeping it up to date -------------------------------------------------------------
    def set(self, session: str, row: Mapping[str, Any] | None) -> None:
        """Re-read one session's row (None or empty: nothing pending)."""
        old = self._rows.pop(session, None)
        if old:
            p, n = old.get("p"), len(old.get("t") or {})
            self._pending[p] = self._pending.get(p, 0) - n  # type: ignore[index,arg-type]
            self._live -= n
        if not row:
            return
        self._rows[session] = row
        p = row.get("p")
        timers = row.get("t") or {}
        self._pending[p] = self._pending.get(p, 0) + len(timers)  # type: ignore[index,arg-type]
        self._live += len(timers)
        heap = self._heaps.setdefault(p, [])  # type: ignore[arg-type]
        for tid, spec in timers.items():
            heapq.heappush(heap, (int(spec["at"]), session, tid))
            self._items += 1
        if self._items > 4 * self._live + 1024:
            self._rebuild()

    def sync(self, table: Mapping[str, Any], changed: Iterable[str] | None = None) -> int:
        """Bring the index to ``table``: only the ``changed`` keys, or (None) a diff by row identity."""
        n = 0
        if changed is not None:
            for key in changed:
                self.set(key, table.get(key))
                n += 1
            return n
        for key in [k for k in self._rows if k not in table]:
            self.set(key, None)
            n += 1
        for key, row in table.items():
            if row is not self._rows.get(key) and (row or key in self._rows):
                self.set(key, row)
                n += 1
        return n

    def _rebuild(self) -> None:
        self._heaps = {}
        self._items = 0
        for session, row in self._rows.items():
            heap = self._heaps.setdefault(row.get("p"), [])  # type: ignore[arg-type]
            for tid, spec in (row.get("t") or {}).items():
                heap.append((int(spec["at"]), session, tid))
                self._items += 1
        for heap in self._heaps.values():
            heapq.heapify(heap)

    # -- the questions the ticker asks -----------------------------------------------------
    def pending(self, active: Iterable[int]) -> int:
        """Pending timers on these partitions."""
        return sum(self._pending.get(p, 0) for p in active)

    def _spec(
        self, session: str, tid: str, at: int, partition: int
    ) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
        row = self._rows.get(session)
        if row is None or row.get("p") != partition:
            return None
        spec = (row.get("t") or {}).get(tid)
        if spec is None or int(spec["at"]) != at:
            return None
        return row, spec

    def due(self, active: Iterable[int], clock_of: Callable[[int], int | None]) -> list[Due]:
        """Every timer due on an active partition by that partition's clock (None: unknown, nothing due),
        oldest first: what :func:`streams.core.timers.due_timers` gives over the whole table."""
        out: list[tuple[int, str, str, str, dict[str, Any]]] = []
        for p in active:
            heap = self._heaps.get(p)
            candidates = self._candidates.get(p)
            if not heap and not candidates:
                continue
            now = clock_of(p)
            if now is None:
                continue
            if candidates is None:
                candidates = self._candidates[p] = {}
            while heap and heap[0][0] <= now:
                at, session, tid = heapq.heappop(heap)
                self._items -= 1
                if self._spec(session, tid, at, p) is not None:
                    candidates[(session, tid)] = at
            for (session, tid), at in list(candidates.items()):
                found = self._spec(session, tid, at, p)
                if found is None:
                    del candidates[(session, tid)]
                    continue
                if at <= now:
                    row, spec = found
                    out.append((at, session, row.get("org", "default"), tid, dict(spec)))
        out.sort(key=lambda t: (t[0], t[1], t[3]))
        return [(s, o, t, spec) for _, s, o, t, spec in out]
