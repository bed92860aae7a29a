"""The profile fold of a whole log at once, as numpy columns: what ``ups init`` folds a freshly generated
database with, where the Bytewax replay folds one event object at a time.

It computes what :func:`dataflow.profile.fold_many` computes (the same documents, the same last seqs,
tested against the replay): per-user counts, sums in integer units (milliseconds, cents), first and last
interaction times and call partners, by grouping the log's columns; base attributes are set by each
user's registration and update events in seq order. Only for a store whose profiles are still empty
and whose log holds no rule events (the rules projection is the replay's to build).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic_core import from_json, to_json

from storage.columns import EventBatch, NewEvents
from storage import Store
from storage.events import INTERACTION_TYPES
from storage.id_codes import IdCodes

from .control import PROFILES_CHECKPOINT
from .profile import ProfileState, _set_base

#: interaction types in a fixed order (column of the counts), then the attribute-setting types
_INTERACTIONS = tuple(sorted(INTERACTION_TYPES))
_ATTRIBUTE_TYPES = ("user.registered", "user.updated")
_TYPES = _INTERACTIONS + _ATTRIBUTE_TYPES
#: the payload field a type's sum adds up, and its integer unit (as fold_many rounds it)
_SUMS = {"call": ("duration", 1000), "app.usage": ("duration", 1000), "product.order": ("amount", 100)}
#: profiles written per transaction
WRITE_CHUNK = 50_000
#: events folded per step (as the log's reader reads them)
FOLD_CHUNK = 500_000


@dataclass
class BulkFoldSummary:
    events: int
    profiles: int
    last_seq: int


class _Users:
    """Per-user accumulators, indexed by first appearance; grown as users appear."""

    def __init__(self) -> None:
        self.dictionary = IdCodes()
        self.counts = np.zeros((0, len(_INTERACTIONS)), np.int64)
        self.sums = {t: np.zeros(0, np.int64) for t in _SUMS}
        self.first = np.zeros(0)
        self.last = np.zeros(0)
        self.last_seq = np.zeros(0, np.int64)
        self.partners: list[pd.DataFrame] = []
        self.states: dict[int, ProfileState] = {}

    @property
    def ids(self) -> list[str]:
        return self.dictionary.ids

    def codes(self, users: np.ndarray) -> np.ndarray:
        coded = self.dictionary.add(users)
        assert coded is not None, "users without an id are left out before"
        grow = len(self.dictionary) - len(self.first)
        if grow > 0:
            self.counts = np.vstack([self.counts, np.zeros((grow, len(_INTERACTIONS)), np.int64)])
            self.sums = {t: np.concatenate([v, np.zeros(grow, np.int64)]) for t, v in self.sums.items()}
            self.first = np.concatenate([self.first, np.full(grow, np.inf)])
            self.last = np.concatenate([self.last, np.full(grow, -np.inf)])
            self.last_seq = np.concatenate([self.last_seq, np.zeros(grow, np.int64)])
        return coded[0]


def _values(texts: np.ndarray, field: str) -> np.ndarray:
    """The number ``field`` of each JSON payload: sliced out of the usual one-field text and parsed by
    Arrow's compute kernels (no Python per payload), parsed as JSON where a payload has another form."""
    prefix = f'{{"{field}":'
    text = pa.array(texts, type=pa.string())
    plain = pc.and_(pc.and_(pc.starts_with(text, prefix), pc.ends_with(text, "}")),
                    pc.invert(pc.match_substring(text, ",")))
    plain_np = plain.to_numpy(zero_copy_only=False)
    out = np.empty(len(texts))
    if plain_np.any():
        sliced = pc.utf8_slice_codeunits(pc.filter(text, plain), len(prefix), -1)
        out[plain_np] = pc.cast(sliced, pa.float64()).to_numpy()
    for i in np.flatnonzero(~plain_np).tolist():
        out[i] = float(json.loads(texts[i]).get(field, 0.0))
    return out


def _fold_batch(acc: _Users, batch: EventBatch) -> None:
    # elementwise on the object array (pd.notna would first convert it to pandas strings)
    keep = np.asarray(batch.user != None)  # noqa: E711
    if not keep.all():
        batch = batch.take(np.flatnonzero(keep))
    if not len(batch):
        return
    code = np.asarray(batch.type.codes, np.int64)
    u = acc.codes(np.asarray(batch.user, dtype=object))
    np.maximum.at(acc.last_seq, u, batch.seq)
    inter = code < len(_INTERACTIONS)
    ui, ci = u[inter], code[inter]
    n = len(acc.ids)
    acc.counts += np.bincount(ui * len(_INTERACTIONS) + ci, minlength=n * len(_INTERACTIONS)).reshape(n, -1)
    np.minimum.at(acc.first, ui, batch.ts[inter])
    np.maximum.at(acc.last, ui, batch.ts[inter])
    for etype, (field, unit) in _SUMS.items():
        sel = code == _TYPES.index(etype)
        if sel.any():
            # round half to even, as Python's round in fold_many
            units = np.round(_values(batch.payload[sel], field) * unit).astype(np.int64)
            acc.sums[etype] += np.bincount(u[sel], weights=units, minlength=n).astype(np.int64)
    calls = code == _TYPES.index("call")
    if calls.any():
        acc.partners.append(pd.DataFrame({"u": u[calls], "p": pd.Series(batch.target[calls]).fillna("")})
                            .drop_duplicates())
    attrs = (code >= len(_INTERACTIONS)) & (code < len(_TYPES))
    at = np.flatnonzero(attrs)
    if len(at):
        _set_attributes(acc, u[at], code[at] == _TYPES.index("user.registered"), batch.payload[at], batch.seq[at])


def _set_attributes(acc: _Users, users: np.ndarray, registers: np.ndarray, payloads: np.ndarray,
                    seqs: np.ndarray) -> None:
    """Registrations and updates, in seq order: the JSON texts parsed in one call, as one array."""
    texts = payloads.tolist()
    if all(isinstance(t, str) for t in texts):
        values = from_json("[" + ",".join(texts) + "]")
    else:
        values = [json.loads(t) if isinstance(t, str) else (t or {}) for t in texts]
    states, ids = acc.states, acc.ids
    for k, registered, doc, seq in zip(users.tolist(), registers.tolist(), values, seqs.tolist()):
        state = states.get(k)
        if state is None:
            state = states[k] = ProfileState(ids[k])
        _set_base(state, doc, seq)
        if registered:
            state.registered = True


def _partner_lists(frames: list[pd.DataFrame]) -> dict[int, list[str]]:
    """user code -> its distinct call partners, from (u, p) frames: one sort, then a slice per user (a
    pandas group per user cost ~50 µs each, most of the fold's own time at 1M users)."""
    if not frames:
        return {}
    pairs = pd.concat(frames).drop_duplicates().sort_values("u", kind="stable")
    users = pairs["u"].to_numpy()
    names = pairs["p"].tolist()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    return {k: names[a:b] for k, a, b in zip(users[starts].tolist(), starts.tolist(), ends.tolist())}


def _documents(acc: _Users, lo: int, hi: int, partners: dict[int, list[str]]) -> list[tuple[str, str, int]]:
    """Profile rows as the flow writes them (the document's JSON text by pydantic-core)."""
    rows = []
    for k in range(lo, hi):
        state = acc.states.get(k) or ProfileState(acc.ids[k])
        counts = acc.counts[k]
        state.event_counts = {t: int(c) for t, c in zip(_INTERACTIONS, counts.tolist()) if c}
        state.total_events = int(counts.sum())
        state.partners = set(partners.get(k, ()))
        state.call_ms, state.app_ms = int(acc.sums["call"][k]), int(acc.sums["app.usage"][k])
        state.spend_cents = int(acc.sums["product.order"][k])
        if state.total_events:
            state.first_event_at, state.last_event_at = float(acc.first[k]), float(acc.last[k])
        rows.append((state.user_id, to_json(state.document()).decode(), int(acc.last_seq[k])))
    return rows


class ProfileFold:
    """The fold's accumulators over batches of events given in seq order (read from the log, or the
    columns a bulk writer has just appended), and the profiles they give, written once at the end."""

    def __init__(self) -> None:
        self.acc = _Users()
        self.events = 0
        #: the last seq the batches folded so far cover
        self.upto = 0
        self._pending: list[tuple[NewEvents, int]] = []

    def add(self, batch: EventBatch) -> None:
        _fold_batch(self.acc, batch)
        self.events += len(batch)
        self.upto = max(self.upto, batch.upto)

    def add_appended(self, cols: NewEvents, first_seq: int) -> None:
        """Events just appended as ``cols``, which the log gave the seqs ``first_seq``, ``first_seq + 1`` …
        (the caller checks that it did): folded from the columns in memory, not read back, a
        ``FOLD_CHUNK`` of events at a time (each fold step costs a pass over every user's accumulators)."""
        self._pending.append((cols, first_seq))
        if sum(len(c) for c, _ in self._pending) >= FOLD_CHUNK:
            self._fold_pending()

    def _fold_pending(self) -> None:
        if not self._pending:
            return
        first_seq = self._pending[0][1]
        cols = [c for c, _ in self._pending]
        self._pending = []

        def column(name: str) -> np.ndarray:
            return np.concatenate([np.asarray(getattr(c, name), dtype=object) for c in cols])

        types = column("type")
        n = len(types)
        # the few distinct type names coded once (a Categorical of the strings hashes each against the
        # categories: twice the time)
        codes, names = pd.factorize(types)
        categories = [*_TYPES, *sorted(set(names).difference(_TYPES))]
        at = pd.Index(categories).get_indexer(names)
        self.add(EventBatch(
            np.arange(first_seq, first_seq + n, dtype=np.int64), pd.Categorical.from_codes(at[codes], categories),
            column("user"), column("target"), np.concatenate([np.asarray(c.ts, np.float64) for c in cols]),
            column("payload"), first_seq + n - 1,
        ))

    def write(self, store: Store, last: int, progress: Callable[[int, int], None] | None = None) -> BulkFoldSummary:
        """Write the profiles (into an empty projection) and set its checkpoint to ``last``; ``progress``
        gets (profiles written, profiles)."""
        self._fold_pending()
        acc = self.acc
        partners = _partner_lists(acc.partners)
        n = len(acc.ids)
        for lo in range(0, n, WRITE_CHUNK):
            rows = _documents(acc, lo, min(n, lo + WRITE_CHUNK), partners)
            with store.transaction():
                store.profiles.upsert_many(rows)
                if lo + WRITE_CHUNK >= n:
                    store.checkpoints.set(PROFILES_CHECKPOINT, last)
            if progress:
                progress(min(n, lo + WRITE_CHUNK), n)
        if n == 0:
            with store.transaction():
                store.checkpoints.set(PROFILES_CHECKPOINT, last)
        return BulkFoldSummary(self.events, n, last)


def check_foldable(store: Store) -> dict[str, int]:
    """The log's counts by type, when the bulk fold may build its profiles (empty profiles, no rule events)."""
    if store.profiles.count() or store.checkpoints.get(PROFILES_CHECKPOINT):
        raise ValueError("bulk_fold folds into empty profiles only; continue with the replay")
    present = store.counts_by_type()
    if any(t.startswith("rule.") for t in present):
        raise ValueError("the log holds rule events: the replay builds the rules projection")
    return present


def bulk_fold(store: Store, progress: Callable[[int], None] | None = None,
              chunk: int = 500_000) -> BulkFoldSummary:
    """Fold the whole log into the (empty) profiles projection and set its checkpoint to the log's end."""
    last = store.last_seq()
    present = check_foldable(store)
    # every event with a user is folded (a label too moves the profile's last seq), as in the flow
    types = [*_TYPES, *(t for t in present if t not in _TYPES)]
    fold = ProfileFold()
    for batch in store.read_columns(1, last, types,
                                    payload_types=(*_SUMS, *_ATTRIBUTE_TYPES), chunk=chunk):
        fold.add(batch)
        if progress:
            progress(len(batch))
    return fold.write(store, last)
