"""The graph's events as integer columns: what the graph build reads instead of the log's rows.

Each append writes, in its own transaction, one block for the seqs it added: per graph event its kind
(a small int), the codes of its subject and target nodes, its seq and time, as numpy arrays in BLOBs,
and the ids of the nodes it names first. A node's code is its rank of first appearance among the nodes
of its type (an event's subject before its target): the node dictionary is the blocks' new ids in
order, and a node's code is its index in a graph built from the whole log. Blocks cover a prefix of the
log (seqs 1..N, gapless); an append whose events cannot be coded (an id missing), or that finds the
blocks behind the log (a store written before they existed), writes none, and readers read the log past
the last block as before. :meth:`GraphColumns.rebuild` recodes the whole log.

The writer keeps the dictionary in memory (:class:`NodeCodes`) and checks it against the newest block
under the write lock, so several writer processes stay consistent and a rolled-back append's nodes are
dropped.
"""

from __future__ import annotations

import secrets
from array import array
from itertools import repeat
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any, Callable, ContextManager, Iterable, Protocol, Sequence

import numpy as np
from pydantic_core import from_json, to_json

from .id_codes import IdCodes

#: node types, in code order
NODE_TYPES: tuple[str, ...] = ("user", "product", "app")
_USER, _PRODUCT, _APP = range(3)
#: graph event type -> (subject node type, whether the subject is the target column, target node type or -1)
_REFS: dict[str, tuple[int, bool, int]] = {
    "user.registered": (_USER, False, -1),
    "user.updated": (_USER, False, -1),
    "product.listed": (_PRODUCT, True, -1),
    "app.listed": (_APP, True, -1),
    "call": (_USER, False, _USER),
    "product.order": (_USER, False, _PRODUCT),
    "product.click": (_USER, False, _PRODUCT),
    "app.usage": (_USER, False, _APP),
    "app.click": (_USER, False, _APP),
}
#: graph event types, in kind order (a block's kind column indexes this)
KINDS: tuple[str, ...] = tuple(_REFS)
#: the kinds whose payload sets node attributes (read from the log with the columns)
ATTRIBUTE_KINDS: tuple[str, ...] = KINDS[:4]
_KIND_OF = {t: k for k, t in enumerate(KINDS)}
_KIND_SET = frozenset(KINDS)
_SUBJ_TYPE = np.array([r[0] for r in _REFS.values()], np.int8)
_SUBJ_IS_TARGET = np.array([r[1] for r in _REFS.values()], bool)
_TGT_TYPE = np.array([r[2] for r in _REFS.values()], np.int8)
#: appends of at most this many events are coded event by event (:meth:`NodeCodes._code_few`)
_FEW = 64  # where coding a column at a time starts to pay for its numpy calls (measured: even at 64 events)
#: seqs the log is coded by per transaction when the blocks catch up or are rebuilt: one chunk's
#: columns, strings and hash tables are held at a time (500 000 held some 110 MB more per 300 000 events)
REBUILD_CHUNK = 100_000
#: where a block's seqs begin from: stored as int32 offsets from it
_SEQ = np.int32


def node_types_of(kind: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per event of these kinds: its subject's node type, its target's (-1: none), as NODE_TYPES positions."""
    return _SUBJ_TYPE[kind], _TGT_TYPE[kind]


@dataclass(slots=True)
class CodedBlock:
    """One append's graph events as columns (seq order), and the nodes they name first, per type."""

    first_seq: int
    last_seq: int
    kind: np.ndarray  # int8, index into KINDS
    subj: np.ndarray  # int32 code within the subject's node type
    tgt: np.ndarray  # int32 code within the target's node type, -1: none
    seq: np.ndarray  # int64
    ts: np.ndarray  # float64
    new_nodes: list[list[str]] = field(default_factory=lambda: [[] for _ in NODE_TYPES])
    token: int = 0


@dataclass(slots=True)
class GraphColumnsData:
    """The graph events of seqs 1..``upto`` as columns: the node ids per type (code order), the events,
    and the attribute events' payloads (parsed, in seq order, with their seqs)."""

    upto: int
    node_ids: list[list[str]]
    kind: np.ndarray
    subj: np.ndarray
    tgt: np.ndarray
    seq: np.ndarray
    ts: np.ndarray
    attr_seq: np.ndarray
    attr_payload: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.seq)


#: a block row as the tables hold it: (first_seq, last_seq, token, new_nodes, kind, subj, tgt, seq, ts)
BlockRow = tuple[int, int, int, str, bytes, bytes, bytes, bytes, bytes]


def block_row(b: CodedBlock) -> BlockRow:
    return (b.first_seq, b.last_seq, b.token, to_json(b.new_nodes).decode(), b.kind.astype(np.int8).tobytes(),
            b.subj.astype(np.int32).tobytes(), b.tgt.astype(np.int32).tobytes(),
            (b.seq - b.first_seq).astype(_SEQ).tobytes(), b.ts.astype(np.float64).tobytes())


def concat_blocks(rows: Iterable[tuple[int, int, str, bytes, bytes, bytes, bytes, bytes]], start: int = 0) -> GraphColumnsData:
    """(first_seq, last_seq, new_nodes, kind, subj, tgt, seq, ts) rows in seq order -> the columns of the
    gapless run they cover from seq ``start + 1`` (``attr_*`` left empty)."""
    nodes: list[list[str]] = [[] for _ in NODE_TYPES]
    parts: list[tuple[np.ndarray, ...]] = []
    upto = start
    for first, last, new_nodes, kind_b, subj_b, tgt_b, seq_b, ts_b in rows:
        if first != upto + 1:
            break
        upto = last
        for t, ids in enumerate(from_json(new_nodes)):
            nodes[t].extend(ids)
        parts.append((np.frombuffer(kind_b, np.int8), np.frombuffer(subj_b, np.int32), np.frombuffer(tgt_b, np.int32),
                      np.frombuffer(seq_b, _SEQ).astype(np.int64) + first, np.frombuffer(ts_b, np.float64)))
    kind, subj, tgt, seq, ts = (np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, d)
                                for i, d in enumerate((np.int8, np.int32, np.int32, np.int64, np.float64)))
    return GraphColumnsData(upto, nodes, kind, subj, tgt, seq, ts, np.zeros(0, np.int64), [])


def merge_blocks(rows: Sequence[tuple[int, int, str, bytes, bytes, bytes, bytes, bytes]]) -> BlockRow:
    """Consecutive blocks ((first_seq, last_seq, new_nodes, kind, subj, tgt, seq, ts), in seq order) as
    one, with a new token."""
    first, last = rows[0][0], rows[-1][1]
    data = concat_blocks(rows, first - 1)
    if data.upto != last:
        raise ValueError(f"blocks from seq {first} to {last} are not consecutive")
    return block_row(CodedBlock(first, last, data.kind, data.subj, data.tgt, data.seq, data.ts, data.node_ids,
                                secrets.randbits(62)))


def compaction_runs(sizes: Sequence[tuple[int, int, int]], small: int, target: int) -> list[tuple[int, int]]:
    """Runs of consecutive small blocks worth merging, from (first_seq, last_seq, events) per block in
    seq order: (first_seq of the run's first block, last_seq of its last), each of 2 blocks or more,
    together at most ``target`` events (and a seq span an int32 offset holds)."""
    runs: list[tuple[int, int]] = []
    start: tuple[int, int] | None = None  # (first_seq, blocks)
    total = 0
    prev_last = 0
    for first, last, events in [*sizes, (0, 0, small)]:  # a sentinel ends the last run
        fits = start is not None and total + events <= target and last - start[0] < 2**31 - 1
        if events < small and first == prev_last + 1 and fits:
            start, total = (start[0], start[1] + 1), total + events  # type: ignore[index]
        else:
            if start is not None and start[1] > 1:
                runs.append((start[0], prev_last))
            start, total = ((first, 1), events) if events < small else (None, 0)
        prev_last = last
    return runs


#: a block table's newest block as (first_seq, last_seq, token), None: no block, ``...``: not read yet
Newest = tuple[int, int, int] | None | EllipsisType


class BlockTable(Protocol):
    """What :class:`NodeCodes` needs of a backend's block table, inside the append's transaction."""

    def newest(self) -> tuple[int, int, int] | None:
        """(first_seq, last_seq, token) of the newest block."""
        ...

    def has(self, first_seq: int, token: int) -> bool: ...

    def new_nodes_after(self, first_seq: int) -> list[tuple[int, int, str]]:
        """(first_seq, token, new_nodes JSON) of the blocks after ``first_seq``, in order."""
        ...

    def insert(self, row: BlockRow) -> None: ...


class NodeCodes:
    """A writer's copy of the node dictionary: id -> code per node type, and the newest block it holds."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.index: list[IdCodes] = [IdCodes() for _ in NODE_TYPES]
        self.newest: tuple[int, int] | None = None  # (first_seq, token)

    def _load(self, rows: list[tuple[int, int, str]]) -> None:
        for first, token, new_nodes in rows:
            for t, ids in enumerate(from_json(new_nodes)):
                self.index[t].extend(ids)
            self.newest = (first, token)

    def sync(self, table: BlockTable, top: Newest = ...) -> int:
        """Bring the copy up to the table (other writers, rolled-back appends); the seq the blocks cover.
        ``top``: the table's newest block if the caller read it already (``...``: read it here)."""
        if top is ...:
            top = table.newest()
        if top is None:
            self._reset()
            return 0
        if self.newest != (top[0], top[2]):
            if self.newest is None or not table.has(*self.newest):
                self._reset()
            self._load(table.new_nodes_after(self.newest[0] if self.newest else 0))
        return top[1]

    def record(self, table: BlockTable, before: int, last: int, seqs: Sequence[int] | np.ndarray,
               types: Sequence[str] | np.ndarray,
               users: Sequence[str | None] | np.ndarray, targets: Sequence[str | None] | np.ndarray,
               ts: Sequence[float] | np.ndarray, top: Newest = ...) -> None:
        """Code the events an append just added (seqs ``before + 1 .. last``, these among them) and write
        their block, if the blocks reach ``before`` (``top``: as :meth:`sync`)."""
        if last <= before:
            return
        if _KIND_SET.isdisjoint(types):  # nothing to code: the dictionary need not even be loaded
            self._record_empty(table, before, last, top)
            return
        if self.sync(table, top) != before:
            return
        self.newest = None  # until the block is in: a failure on the way makes the next sync reload
        row = self.code(before + 1, last, seqs, types, users, targets, ts)
        if row is None:
            return
        table.insert(row)
        self.newest = (row[0], row[2])

    def record_rows(self, table: BlockTable, before: int, new: Sequence[tuple[int, str]],
                    rows: Sequence[Sequence[Any]], top: Newest = ...) -> None:
        """:meth:`record` of the rows an append was given (``(event_id, type, user_id, target_id, ts,
        ...)``), of which ``new`` (their (seq, event id)) were appended: an id's first row, where one
        repeats or was there already."""
        if not new:
            return
        if len(new) != len(rows):
            first: dict[str, Sequence[Any]] = {}
            for r in rows:
                first.setdefault(r[0], r)
            rows = [first[eid] for _, eid in new]
        # a column at a time: zip(*rows) makes an iterator object per row, and those allocations set off
        # the cycle collector's passes over the caller's whole heap
        types, users, targets, ts = ([r[i] for r in rows] for i in range(1, 5))
        seqs = [s for s, _ in new]
        self.record(table, before, seqs[-1], seqs, types, users, targets, ts, top)

    def _record_empty(self, table: BlockTable, before: int, last: int, top: Newest = ...) -> None:
        """The block of an append without graph events (rules, labels, operations ...): it only moves
        the blocks' end. The copy stays as current as it was."""
        if top is ...:
            top = table.newest()
        if (top[1] if top else 0) != before:
            return
        current = self.newest == (top[0], top[2]) if top else self.newest is None and not any(map(len, self.index))
        row = self._code_few(before + 1, last, (), (), (), (), ())
        assert row is not None  # no event: nothing lacks an id
        table.insert(row)
        if current:
            self.newest = (row[0], row[2])

    def code(self, first: int, last: int, seqs: Sequence[int] | np.ndarray, types: Sequence[str] | np.ndarray,
             users: Sequence[str | None] | np.ndarray, targets: Sequence[str | None] | np.ndarray,
             ts: Sequence[float] | np.ndarray) -> BlockRow | None:
        """The block row of these events (None: a graph event lacks an id it needs). New nodes enter the
        dictionary now: :meth:`record` makes the next :meth:`sync` drop them unless its block is written."""
        if len(types) <= _FEW:
            return self._code_few(first, last, seqs, types, users, targets, ts)
        block = self._code_many(first, last, seqs, types, users, targets, ts)
        return block_row(block) if block is not None else None

    def _code_many(self, first: int, last: int, seqs: Sequence[int] | np.ndarray, types: Sequence[str] | np.ndarray,
                   users: Sequence[str | None] | np.ndarray, targets: Sequence[str | None] | np.ndarray,
                   ts: Sequence[float] | np.ndarray) -> CodedBlock | None:
        """:meth:`code` of many events, a column at a time."""
        kind_all = np.fromiter(map(_KIND_OF.get, types, repeat(-1)), np.int8, len(types))
        sel = np.flatnonzero(kind_all >= 0)
        kind = kind_all[sel]
        user = np.asarray(users, dtype=object)[sel]
        target = np.asarray(targets, dtype=object)[sel]
        n = len(sel)
        ids = np.empty(2 * n, dtype=object)
        ids[0::2] = np.where(_SUBJ_IS_TARGET[kind], target, user)
        ids[1::2] = target
        typ = np.empty(2 * n, np.int8)
        typ[0::2], typ[1::2] = _SUBJ_TYPE[kind], _TGT_TYPE[kind]
        code = np.full(2 * n, -1, np.int32)
        new_nodes: list[list[str]] = [[] for _ in NODE_TYPES]
        for t in range(len(NODE_TYPES)):
            at = np.flatnonzero(typ == t)
            if not len(at):
                continue
            coded = self.index[t].add(ids[at])
            if coded is None:
                return None
            code[at], new_nodes[t] = coded
        return CodedBlock(first, last, kind, code[0::2], code[1::2], np.asarray(seqs, np.int64)[sel],
                          np.asarray(ts, np.float64)[sel], new_nodes, secrets.randbits(62))

    def _code_few(self, first: int, last: int, seqs: Sequence[int] | np.ndarray, types: Sequence[str] | np.ndarray,
                  users: Sequence[str | None] | np.ndarray, targets: Sequence[str | None] | np.ndarray,
                  ts: Sequence[float] | np.ndarray) -> BlockRow | None:
        """:meth:`code` of a few events one by one, straight into the row's bytes (rules, labels and
        single events are appended alone: numpy's per-call costs there are many times the
        work). The same codes in the same order."""
        # the BLOBs' types: int8 kinds, C int (32 bits, as np.int32) codes and seq offsets, float64 times
        kinds, subj_col, tgt_col, seq_col, ts_col = bytearray(), array("i"), array("i"), array("i"), array("d")
        new_nodes: list[list[str]] = [[] for _ in NODE_TYPES]
        code_node = self._code_node
        for typ, user, target, seq, t in zip(types, users, targets, seqs, ts):
            refs = _REFS.get(typ)
            if refs is None:
                continue
            subj_type, subj_is_target, tgt_type = refs
            subj = code_node(target if subj_is_target else user, subj_type, new_nodes)
            tgt = code_node(target, tgt_type, new_nodes) if tgt_type >= 0 else -1
            if subj is None or tgt is None:
                return None
            kinds.append(_KIND_OF[typ])
            subj_col.append(subj)
            tgt_col.append(tgt)
            seq_col.append(int(seq) - first)
            ts_col.append(float(t))
        return (first, last, secrets.randbits(62), to_json(new_nodes).decode(), bytes(kinds), subj_col.tobytes(),
                tgt_col.tobytes(), seq_col.tobytes(), ts_col.tobytes())

    def _code_node(self, node: str | None, node_type: int, new_nodes: list[list[str]]) -> int | None:
        """A node's code, a new one where it is new (None: no id, None or NaN as pd.isna)."""
        if node is None or node != node:
            return None
        d = self.index[node_type]
        code = d.get(node)
        if code is None:
            code = len(d)
            d.extend([node])
            new_nodes[node_type].append(node)
        return code


class BlockProjection(ABC):
    """The projection step over a backend's block table: catch up with the log, rebuild, compact. The
    steps are the same on every backend; each supplies the table's statements and its write lock."""

    codes: NodeCodes

    # ------------------------------------------------------------ what a backend supplies

    @abstractmethod
    def newest(self) -> tuple[int, int, int] | None: ...

    @abstractmethod
    def has(self, first_seq: int, token: int) -> bool: ...

    @abstractmethod
    def new_nodes_after(self, first_seq: int) -> list[tuple[int, int, str]]: ...

    @abstractmethod
    def insert(self, row: BlockRow) -> None: ...

    @abstractmethod
    def clear(self) -> None: ...

    @abstractmethod
    def _locked(self) -> ContextManager[Any]:
        """A transaction holding the append lock: no append meanwhile."""

    @abstractmethod
    def _log_end(self) -> int:
        """The log's last seq (0: empty)."""

    @abstractmethod
    def _log_columns(self, start: int, last: int, chunk: int) -> Iterable[Any]:
        """The log's graph events in seqs ``start .. last`` as ``storage.columns.EventBatch``, ``chunk`` seqs each."""

    @abstractmethod
    def _block_sizes(self) -> list[tuple[int, int, int]]:
        """(first_seq, last_seq, events) of every block, in order."""

    @abstractmethod
    def _rows_between(self, lo: int, hi: int) -> list[tuple[int, int, str, bytes, bytes, bytes, bytes, bytes]]:
        """The blocks within seqs ``lo .. hi``, in order, as stored."""

    @abstractmethod
    def _delete_from(self, lo: int, last_first: int) -> None:
        """Delete the blocks whose first seq is within ``lo .. last_first``."""

    # ------------------------------------------------------------ the projection step

    def covered(self) -> int:
        """The seq up to which the blocks cover the log (0: none)."""
        top = self.newest()
        return top[1] if top else 0

    def catch_up(self, chunk: int = REBUILD_CHUNK, progress: Callable[[int], None] | None = None) -> int:
        """Code the log past the blocks (a store written before them, an append that wrote none), one
        transaction per ``chunk`` seqs; the seq then covered (again while appends came meanwhile, which
        find the blocks behind the log and write none)."""

        def write(step: Callable[[], bool]) -> bool:
            with self._locked():
                done = step()
            if progress:
                progress(self.covered())
            return done

        while True:
            start = self.covered()
            last = self._log_end()
            if start >= last:
                return start
            code_log(self, self.codes, start, self._log_columns(start + 1, last, chunk), write)
            if self.covered() <= start:  # an event that cannot be coded: the log is read past it
                return start

    def extend(self, after: int, upto: int, seqs: np.ndarray, types: Sequence[str], users: Sequence[str | None],
               targets: Sequence[str | None], ts: Sequence[float]) -> int:
        """Code the log's seqs ``after + 1 .. upto`` from columns a reader of the log already holds (every
        event of that range, or at least every graph event, in seq order: a replay's batch) into one
        block, in one transaction, where the blocks end within that range; the seq then covered. Blocks
        that end before ``after`` are left for :meth:`catch_up`, which reads the log itself."""
        with self._locked():
            top = self.newest()
            before = self.codes.sync(self, top)
            if after <= before < upto:
                k = int(np.searchsorted(seqs, before, side="right"))  # what another writer coded is skipped
                self.codes.record(self, before, upto, seqs[k:], types[k:], users[k:], targets[k:], ts[k:], top)
        return self.covered()

    def compact(self, small: int = 50_000, target: int = 1_000_000) -> int:
        """Merge runs of small blocks (a flow appending a few events at a time writes one each) into
        blocks of up to ``target`` events, one transaction a run; how many blocks went."""
        gone = 0
        for lo, hi in compaction_runs(self._block_sizes(), small, target):
            with self._locked():
                rows = self._rows_between(lo, hi)
                if len(rows) < 2 or rows[0][0] != lo or rows[-1][1] != hi:
                    continue  # changed meanwhile (a rebuild)
                merged = merge_blocks(rows)
                self._delete_from(lo, rows[-1][0])
                self.insert(merged)
                gone += len(rows) - 1
        return gone

    def rebuild(self, chunk: int = REBUILD_CHUNK, progress: Callable[[int], None] | None = None) -> int:
        """Code the whole log anew (what a replay does to every projection)."""
        with self._locked():
            self.clear()
        return self.catch_up(chunk, progress)


def code_log(table: BlockTable, codes: NodeCodes, start: int, batches: Iterable[Any],
             write: Callable[[Callable[[], bool]], bool]) -> None:
    """Code the log's columnar ``batches`` (``storage.columns.EventBatch`` of the graph event types, in
    seq order, covering the seqs after ``start``) into blocks, each written by ``write`` (which runs it
    in a transaction). What another writer coded meanwhile is not coded twice."""
    lo = start
    for batch in batches:

        def one(batch: Any = batch, lo: int = lo) -> bool:
            before = codes.sync(table)
            if before < lo:  # the blocks end before this batch: someone took blocks away
                return False
            fresh = np.flatnonzero(batch.seq > before)
            codes.record(table, before, batch.upto, batch.seq[fresh], np.asarray(batch.type, dtype=object)[fresh],
                         batch.user[fresh], batch.target[fresh], batch.ts[fresh])
            return True

        if not write(one):
            return
        lo = batch.upto


__all__ = ["NODE_TYPES", "KINDS", "ATTRIBUTE_KINDS", "BlockProjection", "CodedBlock", "GraphColumnsData", "NodeCodes", "code_log",
           "compaction_runs", "merge_blocks", "node_types_of"]
