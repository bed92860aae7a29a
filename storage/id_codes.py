"""A dictionary of string ids to codes in order of first appearance, looked up a whole array at a time.

Small lookups (a live append's few events) go through a dict; large ones (a bulk load's batches)
through a pandas hash index, which looks up in C what the dict costs ~1 µs of Python per id. The index
is rebuilt when ids were added since its build, but only once the large lookups made meanwhile add up
to its size: its rebuild never costs more than the lookups it serves, and a flow adding a user now
and then never rebuilds it. pandas is imported by the first large lookup: a process that appends a few
events at a time never loads it.
"""

from __future__ import annotations

from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

#: lookups of at least this many values may go through the hash index (and their new ids through
#: pandas.factorize): below it the dict costs less than pandas' import (~0.3 CPU-s, 70 MB with pyarrow)
#: saves, for a process such as a replay coding 10 000 events at a time
LARGE = 50_000


class IdCodes:
    def __init__(self) -> None:
        self._dict: dict[str, int] = {}
        self._ids: list[str] = []
        self._index: pd.Index | None = None
        #: values looked up by the dict in large lookups since the index went stale
        self._stale_work = 0

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        """The ids in code order."""
        return self._ids

    def get(self, value: str) -> int | None:
        return self._dict.get(value)

    def extend(self, ids: list[str]) -> None:
        """Append new ids (not in the dictionary yet), coded from ``len(self)`` on."""
        self._dict.update(zip(ids, range(len(self._ids), len(self._ids) + len(ids))))
        self._ids.extend(ids)

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """The code of each value (object array), -1 where it is not in the dictionary."""
        n = len(values)
        if n >= LARGE and self._ids:
            import pandas as pd

            current = self._index is not None and len(self._index) == len(self._ids)
            if not current and self._stale_work + n >= len(self._ids):
                self._index, self._stale_work = pd.Index(self._ids, dtype=object), 0
                current = True
            if current:
                assert self._index is not None
                # the values as an object Index: an array would be converted to pandas strings first
                return np.asarray(self._index.get_indexer(pd.Index(values, dtype=object)), np.int64)
            self._stale_work += n
        return np.fromiter(map(self._dict.get, values, repeat(-1)), np.int64, n)

    def add(self, values: np.ndarray) -> tuple[np.ndarray, list[str]] | None:
        """The codes of ``values`` (object array), its ids new to the dictionary added in order of first
        appearance; and those new ids. None (nothing added) where a value is missing (None/NaN)."""
        found = self.lookup(values)
        unknown = np.flatnonzero(found < 0)
        if not len(unknown):
            return found, []
        if len(unknown) < LARGE:
            first = dict.fromkeys(values[unknown].tolist())  # the new ids, in order of first appearance
            if None in first or any(v != v for v in first):  # None or NaN, as pd.factorize
                return None
            new = list(first)
            self.extend(new)
            found[unknown] = np.fromiter(map(self._dict.__getitem__, values[unknown]), np.int64, len(unknown))
            return found, new
        import pandas as pd

        codes, uniq = pd.factorize(values[unknown])
        if (codes < 0).any():
            return None
        found[unknown] = codes + len(self._ids)
        new = uniq.tolist()
        self.extend(new)
        return found, new


__all__ = ["IdCodes"]
