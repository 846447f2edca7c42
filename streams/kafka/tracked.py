"""Which keys of a faust table changed since we last looked, without scanning the table.

A faust table with the in-memory store keeps its rows in ``table.data.data``, a plain
dict, and every change reaches that dict: a local write (``table[k] = v``), a
changelog record another worker wrote (``apply_changelog_batch`` updates and pops),
a rebalance clearing it. :func:`watch_table` swaps that dict for a
:class:`TrackedDict` with the same contents, which notes each key it sees changed;
an index built from the table (the inhibitors, the pending timers) then re-reads
only those keys. For a table that is not backed that way (a plain dict in tests,
another store), :func:`watch_table` answers None and the caller diffs the table.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class Changes:
    """Keys changed since the last :meth:`drain` (a set the tracked dict adds to)."""

    __slots__ = ("keys",)

    def __init__(self) -> None:
        self.keys: set[Any] = set()

    def drain(self) -> set[Any]:
        out, self.keys = self.keys, set()
        return out


class TrackedDict(dict):  # type: ignore[type-arg]
    """A dict that tells its watchers which keys were set or removed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watchers: list[Changes] = []

    def _mark(self, key: Any) -> None:
        for w in self.watchers:
            w.keys.add(key)

    def _mark_all(self, keys: Iterable[Any]) -> None:
        for w in self.watchers:
            w.keys.update(keys)

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._mark(key)

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._mark(key)

    def pop(self, key: Any, *default: Any) -> Any:
        value = super().pop(key, *default)
        self._mark(key)
        return value

    def popitem(self) -> tuple[Any, Any]:
        key, value = super().popitem()
        self._mark(key)
        return key, value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self._mark(key)
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        items = dict(*args, **kwargs)
        super().update(items)
        self._mark_all(items)

    def clear(self) -> None:
        keys = list(self)
        super().clear()
        self._mark_all(keys)


def watch_table(table: Any) -> Changes | None:
    """Start noting the changed keys of a faust table on the in-memory store (None: cannot; diff instead).

    Every key already in the table counts as changed on the first :meth:`Changes.drain`.
    """
    store: Any = getattr(table, "data", None)
    rows = getattr(store, "data", None)
    if not isinstance(rows, dict):
        return None
    if not isinstance(rows, TrackedDict):
        tracked = TrackedDict(rows)
        store.data = tracked
        rows = tracked
    changes = Changes()
    changes.keys.update(rows)
    rows.watchers.append(changes)
    return changes
