"""Events as columns: what the graph reads from the log in bulk, without a Python object per event.

A chunk of the log (a seq range) comes back from SQLite as one string per column (``group_concat``),
which numpy and str.split turn into arrays: per event only C loops run, where fetching rows builds a
tuple and five objects per event in the sqlite3 module (the reading was most of the graph build).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

#: separates string values in a concatenated column (ASCII unit separator: not in any id we write;
#: a value holding it is detected by the count and the chunk is read row by row instead)
_SEP = "\x1f"
#: separates payloads (record separator: JSON text holds control characters only escaped)
_PAYLOAD_SEP = "\x1e"
#: times travel as the integer ts * 2**22, exact (and cheap to print) for every float64 from 2**30
#: seconds (2004) on, whose last bit is 2**-22 or coarser; SQL checks it per chunk, and a chunk with a
#: time it does not hold exactly is read as floats row by row
_TS_SCALE = 4_194_304


@dataclass(slots=True)
class EventBatch:
    """Events as columns, in seq order: numpy arrays, ``None`` where an event has no user, target or
    (left out by the reader) payload."""

    seq: np.ndarray  # int64
    type: Any  # str per event: an object array, or a pandas Categorical from the store's reader
    user: np.ndarray  # object: str | None
    target: np.ndarray  # object: str | None
    ts: np.ndarray  # float64
    payload: np.ndarray  # object: dict, JSON text, or None
    #: the last seq the batch covers, counting events that are not in it (labels, rules ...)
    upto: int = 0

    def __len__(self) -> int:
        return len(self.seq)

    @classmethod
    def empty(cls, upto: int = 0) -> "EventBatch":
        none = np.empty(0, dtype=object)
        return cls(np.zeros(0, np.int64), none, none.copy(), none.copy(), np.zeros(0), none.copy(), upto)

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, str, str | None, str | None, float, Any]], upto: int = 0,
                  types: Sequence[str] | None = None) -> "EventBatch":
        """From ``(seq, type, user, target, ts, payload)`` tuples; the types as a Categorical over
        ``types`` when given (as the store's readers return them: codes index ``types``)."""
        if not rows:
            return cls.empty(upto)
        import pandas as pd

        seq, etypes, users, targets, ts, payloads = zip(*rows)
        etype = pd.Categorical(etypes, categories=list(types)) if types is not None else _objects(etypes)
        return cls(
            np.asarray(seq, np.int64), etype, _objects(users), _objects(targets),
            np.asarray(ts, np.float64), _objects(payloads), max(upto, int(seq[-1])),
        )

    def take(self, idx: np.ndarray) -> "EventBatch":
        return EventBatch(self.seq[idx], self.type[idx], self.user[idx], self.target[idx], self.ts[idx],
                          self.payload[idx], self.upto)


@dataclass(slots=True)
class NewEvents:
    """Events to append, as columns: what a bulk writer hands the store without an ``Event`` per row.
    Payloads are JSON text as the store keeps it (``EventStore.append`` writes the same text)."""

    event_id: list[str]
    type: list[str]
    user: list[str | None]
    target: list[str | None]
    ts: list[float]
    payload: list[str]
    #: envelope version of every event
    version: int = 1

    def __len__(self) -> int:
        return len(self.event_id)

    @classmethod
    def of_events(cls, events: Sequence[Any]) -> "NewEvents":
        """From ``Event`` objects (their payload dicts written as the store writes them)."""
        from .event_store import payload_text

        return cls([e.event_id for e in events], [e.type for e in events], [e.user_id for e in events],
                   [e.target_id for e in events], [e.ts for e in events], [payload_text(e.payload) for e in events])

    def rows(self, recorded_at: float) -> Iterator[tuple[Any, ...]]:
        """``(event_id, type, user_id, target_id, ts, payload, version, recorded_at)`` per event."""
        n = len(self.event_id)
        return zip(self.event_id, self.type, self.user, self.target, self.ts, self.payload,
                   repeat(self.version, n), repeat(recorded_at, n))


def _objects(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def scan_columns(
    conn: sqlite3.Connection,
    from_seq: int,
    to_seq: int,
    types: Sequence[str],
    payload_types: Sequence[str],
    chunk: int,
) -> Iterator[EventBatch]:
    """Events of ``types`` with ``from_seq <= seq <= to_seq``, one batch per ``chunk`` seqs (batches
    may be empty of events but still say how far they covered); payloads for ``payload_types`` only."""
    if len(types) > 60:
        raise ValueError("at most 60 event types per scan")
    import pandas as pd  # loaded by the first bulk read: a process that only appends never needs it

    type_names = pd.Index(list(types), dtype=object)
    for lo in range(from_seq, to_seq + 1, chunk):
        hi = min(to_seq, lo + chunk - 1)
        yield _scan_range(conn, lo, hi, types, payload_types, type_names)


def _scan_range(
    conn: sqlite3.Connection, lo: int, hi: int, types: Sequence[str], payload_types: Sequence[str], type_names: pd.Index
) -> EventBatch:
    # type -> one letter ('A' + its position in `types`, '@' for the others): one byte per event
    case = "CASE type " + " ".join(f"WHEN ? THEN '{chr(65 + i)}'" for i in range(len(types))) + " ELSE '@' END"
    # payloads of payload_types, "" for the others (valid JSON holds no raw control character)
    payload = (f"group_concat(CASE WHEN type IN ({','.join('?' * len(payload_types))}) THEN payload ELSE '' END, char(30))"
               if payload_types else "NULL")
    # a search of the rowid (seq) range: SQLite visits the rows, so concatenates them, in seq order
    row = conn.execute(
        f"SELECT count(*), min(seq), max(seq), group_concat({case}, ''), "
        f"group_concat(coalesce(user_id, ''), char(31)), group_concat(coalesce(target_id, ''), char(31)), "
        f"group_concat(CAST(ts * {_TS_SCALE} AS INTEGER)), "
        f"coalesce(max(ts * {_TS_SCALE} <> CAST(ts * {_TS_SCALE} AS INTEGER)), 0), {payload} "
        "FROM events WHERE seq >= ? AND seq <= ?",
        (*types, *payload_types, lo, hi),
    ).fetchone()
    n, first, last, codes_s, user_s, target_s, ts_s, inexact, payload_s = row
    if n == 0:
        return EventBatch.empty(hi)
    codes = np.frombuffer(codes_s.encode("ascii"), dtype=np.uint8).astype(np.int16) - 65
    if last - first + 1 == n:  # no seq missing: the seqs need not travel
        seq = np.arange(first, last + 1, dtype=np.int64)
    else:
        seq = _ints(conn.execute("SELECT group_concat(seq) FROM events WHERE seq >= ? AND seq <= ?", (lo, hi)).fetchone()[0])
    users = user_s.split(_SEP)
    targets = target_s.split(_SEP)
    payloads = payload_s.split(_PAYLOAD_SEP) if payload_types else [None] * n
    if len(users) != n or len(targets) != n or len(payloads) != n or len(seq) != n or np.any(np.diff(seq) <= 0):
        return _fetch_range(conn, lo, hi, types, payload_types)
    keep = np.flatnonzero(codes >= 0)
    if inexact:
        ts = np.asarray(conn.execute("SELECT ts FROM events WHERE seq >= ? AND seq <= ? ORDER BY seq", (lo, hi)).fetchall(),
                        dtype=np.float64).reshape(-1)
    else:
        ts = _ints(ts_s).astype(np.float64) / _TS_SCALE
    user = np.asarray(users, dtype=object)[keep]
    target = np.asarray(targets, dtype=object)[keep]
    user[user == ""] = None
    target[target == ""] = None
    text = _objects(payloads)[keep]
    text[text == ""] = None
    import pandas as pd

    etype = pd.Categorical.from_codes(codes[keep], categories=type_names)
    return EventBatch(seq[keep], etype, user, target, ts[keep], text, hi)


def _ints(text: str) -> np.ndarray:
    """Comma-separated integers -> int64 array (numpy's text parser; str.split where a numpy lacks it)."""
    try:
        return np.fromstring(text, dtype=np.int64, sep=",")
    except (AttributeError, TypeError, ValueError):
        return np.asarray(text.split(","), dtype=np.int64)


def _fetch_range(conn: sqlite3.Connection, lo: int, hi: int, types: Sequence[str], payload_types: Sequence[str]) -> EventBatch:
    """The plain row-by-row read of a range (values the concatenation cannot carry)."""
    attr = ",".join("?" * len(payload_types)) or "NULL"
    rows = conn.execute(
        f"SELECT seq, type, user_id, target_id, ts, CASE WHEN type IN ({attr}) THEN payload END FROM events "
        f"WHERE seq >= ? AND seq <= ? AND type IN ({','.join('?' * len(types))}) ORDER BY seq",
        (*payload_types, lo, hi, *types),
    ).fetchall()
    return EventBatch.from_rows(rows, hi, types)


__all__ = ["EventBatch", "scan_columns"]
