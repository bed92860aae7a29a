"""The heterogeneous user / product / app graph (the seed's ``GraphBuilder``), built from the event log.

Node maps id <-> index per type, raw node attributes, and one edge list per interaction type (event
time and seq as edge attributes), all in growable device buffers: new events append nodes and edges
in place (``apply``) instead of rebuilding a ``HeteroData``. Reverse edge types are views of the
forward lists. Node indices follow first appearance in seq order, so a graph built from the log up
to seq N and then updated with the events after N equals one built up to the end.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from storage.event_store import EventStore
from storage.events import Event

from .features import FeatureSpace, RawFeatures

NODE_TYPES: tuple[str, ...] = ("user", "product", "app")
EdgeType = tuple[str, str, str]

#: interaction event type -> forward edge type (user -> target)
RELATIONS: dict[str, EdgeType] = {
    "call": ("user", "calls", "user"),
    "product.order": ("user", "orders", "product"),
    "product.click": ("user", "clicks", "product"),
    "app.usage": ("user", "uses", "app"),
    "app.click": ("user", "clicks", "app"),
}
FORWARD_EDGE_TYPES: tuple[EdgeType, ...] = tuple(RELATIONS.values())


def reverse_of(et: EdgeType) -> EdgeType:
    return (et[2], f"rev_{et[1]}", et[0])


EDGE_TYPES: tuple[EdgeType, ...] = FORWARD_EDGE_TYPES + tuple(reverse_of(et) for et in FORWARD_EDGE_TYPES)
#: edge type -> (the forward type whose list holds its edges, whether it runs against that list)
FORWARD_OF: dict[EdgeType, tuple[EdgeType, bool]] = {
    **{et: (et, False) for et in FORWARD_EDGE_TYPES},
    **{reverse_of(et): (et, True) for et in FORWARD_EDGE_TYPES},
}
METADATA: tuple[list[str], list[EdgeType]] = (list(NODE_TYPES), list(EDGE_TYPES))

#: events that define or change a node's attributes: type -> node type
ATTRIBUTE_EVENTS: dict[str, str] = {
    "user.registered": "user",
    "user.updated": "user",
    "product.listed": "product",
    "app.listed": "app",
}
GRAPH_EVENT_TYPES: tuple[str, ...] = tuple(ATTRIBUTE_EVENTS) + tuple(RELATIONS)


def edge_key(et: EdgeType) -> str:
    """``user-calls-user``: the name used in metrics and JSON."""
    return "-".join(et)


# ------------------------------------------------------------------------------------------ buffers


class Growable:
    """A tensor with spare capacity along dim 0; ``view`` is the filled part. Doubles when full."""

    def __init__(self, tail: Sequence[int], dtype: torch.dtype, device: torch.device, fill: float = 0) -> None:
        self.tail = tuple(tail)
        self.dtype = dtype
        self.fill = fill
        self.data = torch.full((16, *self.tail), fill, dtype=dtype, device=device)
        self.n = 0

    @property
    def view(self) -> Tensor:
        return self.data[: self.n]

    def reserve(self, extra: int) -> None:
        need = self.n + extra
        if need > self.data.shape[0]:
            cap = max(need, 2 * self.data.shape[0])
            new = torch.full((cap, *self.tail), self.fill, dtype=self.dtype, device=self.data.device)
            new[: self.n] = self.data[: self.n]
            self.data = new

    def append(self, values: Tensor | np.ndarray) -> tuple[int, int]:
        v = torch.as_tensor(values, dtype=self.dtype).to(self.data.device)
        self.reserve(v.shape[0])
        start = self.n
        self.data[start : start + v.shape[0]] = v
        self.n += v.shape[0]
        return start, self.n

    def extend_fill(self, count: int) -> None:
        self.reserve(count)
        self.data[self.n : self.n + count] = self.fill
        self.n += count


class NodeTable:
    """The nodes of one type: ids, index, raw attributes, degree, last event seq/time."""

    def __init__(self, node_type: str, space: FeatureSpace, device: torch.device) -> None:
        self.node_type = node_type
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        k, c, (s, l) = space.widths(node_type)
        self.numeric = Growable((k,), torch.float32, device, fill=math.nan)
        self.categorical = Growable((c,), torch.long, device)
        self.sequence = Growable((s, l), torch.long, device)
        self.degree = Growable((), torch.float32, device)
        self.last_seq = Growable((), torch.long, device)
        self.last_ts = Growable((), torch.float64, device, fill=-math.inf)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, new_ids: Sequence[str]) -> None:
        """Register nodes (attributes missing until an attribute event sets them)."""
        base = len(self.ids)
        for i, nid in enumerate(new_ids):
            self.index[nid] = base + i
        self.ids.extend(new_ids)
        for buf in (self.numeric, self.categorical, self.sequence, self.degree, self.last_seq, self.last_ts):
            buf.extend_fill(len(new_ids))

    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(self.index.__getitem__, ids), dtype=np.int64, count=len(ids))



class EdgeTable:
    """Edges of one forward edge type, in seq order: src, dst (node indices), event time, seq."""

    def __init__(self, device: torch.device) -> None:
        self.src = Growable((), torch.long, device)
        self.dst = Growable((), torch.long, device)
        self.ts = Growable((), torch.float64, device)
        self.seq = Growable((), torch.long, device)

    def __len__(self) -> int:
        return self.src.n

    def append(self, src: np.ndarray, dst: np.ndarray, ts: np.ndarray, seq: np.ndarray) -> None:
        self.src.append(src)
        self.dst.append(dst)
        self.ts.append(ts)
        self.seq.append(seq)


# ------------------------------------------------------------------------------------------ adjacency


class _CSR:
    """Incoming edges grouped by destination over a range of edge ids (``perm`` holds the edge ids)."""

    def __init__(self, dst: Tensor, first_eid: int, num_nodes: int) -> None:
        order = torch.sort(dst, stable=True).indices
        self.perm = order + first_eid
        counts = torch.bincount(dst, minlength=num_nodes) if dst.numel() else torch.zeros(num_nodes, dtype=torch.long, device=dst.device)
        self.rowptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=dst.device)
        torch.cumsum(counts, 0, out=self.rowptr[1:])
        self.num_nodes = num_nodes

    def degree(self, nodes: Tensor) -> Tensor:
        if self.num_nodes == 0:
            return torch.zeros_like(nodes)
        inside = nodes < self.num_nodes
        v = torch.where(inside, nodes, torch.zeros_like(nodes))
        deg = self.rowptr[v + 1] - self.rowptr[v]
        return torch.where(inside, deg, torch.zeros_like(deg))

    def gather_all(self, nodes: Tensor) -> Tensor:
        """Edge ids of all incoming edges of ``nodes`` (vectorised segment gather)."""
        deg = self.degree(nodes)
        total = int(deg.sum())
        if total == 0:
            return torch.empty(0, dtype=torch.long, device=nodes.device)
        starts = self.rowptr[torch.where(nodes < self.num_nodes, nodes, torch.zeros_like(nodes))]
        seg = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), deg)
        offs = torch.arange(total, device=nodes.device) - torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
        return self.perm[starts[seg] + offs]

    def pick(self, nodes: Tensor, offsets: Tensor) -> Tensor:
        """Edge id at position ``offsets[i]`` among the incoming edges of ``nodes[i]``."""
        return self.perm[self.rowptr[nodes] + offsets]


class Adjacency:
    """Incoming edges per destination for one edge type: a CSR over most edges plus a small CSR over
    the newest ones, so appending edges never re-sorts the whole list (compacted past a threshold)."""

    def __init__(self, graph: "HeteroGraph", et: EdgeType) -> None:
        self.graph = graph
        self.et = et
        fwd, self.reverse = FORWARD_OF[et]
        self.table = graph.edges[fwd]
        self._base: _CSR | None = None
        self._base_edges = 0
        self._delta: _CSR | None = None
        self._delta_key: tuple[int, int] = (-1, -1)

    def _dst_col(self) -> Growable:
        return self.table.src if self.reverse else self.table.dst

    def _src_col(self) -> Growable:
        return self.table.dst if self.reverse else self.table.src

    @property
    def num_dst(self) -> int:
        return len(self.graph.nodes[self.et[2]])

    def _sync(self) -> tuple[_CSR, _CSR]:
        m = len(self.table)
        if self._base is None or (m - self._base_edges) > max(self.graph.compact_min, self._base_edges // 20):
            self._base = _CSR(self._dst_col().view[:m], 0, self.num_dst)
            self._base_edges = m
            self._delta_key = (-1, -1)
        key = (m, self.num_dst)
        if self._delta is None or self._delta_key != key:
            self._delta = _CSR(self._dst_col().view[self._base_edges : m], self._base_edges, self.num_dst)
            self._delta_key = key
        return self._base, self._delta

    def in_degree(self, nodes: Tensor) -> Tensor:
        base, delta = self._sync()
        return base.degree(nodes) + delta.degree(nodes)

    def incoming(self, nodes: Tensor, fanout: int | None, generator: torch.Generator | None = None) -> Tensor:
        """Edge ids of the incoming edges of ``nodes``: all of them (``fanout=None``), or up to
        ``fanout`` distinct ones per node drawn uniformly (with replacement, then de-duplicated: O(fanout)
        per node even for an app with a million users)."""
        base, delta = self._sync()
        if fanout is None:
            return torch.cat([base.gather_all(nodes), delta.gather_all(nodes)])
        db, dd = base.degree(nodes), delta.degree(nodes)
        deg = db + dd
        small = deg <= fanout
        parts = [base.gather_all(nodes[small]), delta.gather_all(nodes[small])]
        big = nodes[~small]
        if big.numel():
            bdb, bdeg = db[~small], deg[~small]
            r = torch.rand((big.numel(), fanout), device=nodes.device, generator=generator)
            pos = (r * bdeg.unsqueeze(1).to(r.dtype)).long().clamp_max_(bdeg.unsqueeze(1) - 1)
            rows = big.unsqueeze(1).expand_as(pos)
            in_base = pos < bdb.unsqueeze(1)
            eids = torch.empty_like(pos)
            eids[in_base] = base.pick(rows[in_base], pos[in_base])
            eids[~in_base] = delta.pick(rows[~in_base], (pos - bdb.unsqueeze(1))[~in_base])
            parts.append(torch.unique(eids))
        return torch.cat(parts)

    def endpoints(self, eids: Tensor) -> tuple[Tensor, Tensor]:
        """(src, dst) node indices of edge ids, in this edge type's direction."""
        return self._src_col().view[eids], self._dst_col().view[eids]


# ------------------------------------------------------------------------------------------ the graph


@dataclass(slots=True)
class EventBatch:
    """Graph-relevant events as columns (seq order)."""

    seq: np.ndarray
    type: list[str]
    user: list[str | None]
    target: list[str | None]
    ts: np.ndarray
    payload: list[Any]  # dict, JSON text, or None for interactions
    #: the last seq the batch covers, counting events that are not part of the graph (labels, rules ...)
    upto: int = 0

    def __len__(self) -> int:
        return len(self.type)

    @classmethod
    def from_events(cls, events: Iterable[tuple[int, Event]]) -> "EventBatch":
        upto = 0
        rows = []
        for s, e in events:
            upto = max(upto, s)
            if e.type in _GRAPH_TYPES:
                rows.append((s, e.type, e.user_id, e.target_id, e.ts, e.payload))
        if not rows:
            return cls(np.zeros(0, np.int64), [], [], [], np.zeros(0), [], upto)
        seq, types, users, targets, ts, payloads = zip(*rows)
        return cls(np.asarray(seq, np.int64), list(types), list(users), list(targets), np.asarray(ts, np.float64), list(payloads), upto)


_GRAPH_TYPES = frozenset(GRAPH_EVENT_TYPES)


@dataclass
class GraphDelta:
    """What one ``apply`` changed: nodes to re-embed (with the seq and time of the change), counts."""

    touched: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)  # idx, seq, ts
    new_nodes: dict[str, int] = field(default_factory=dict)
    new_edges: dict[EdgeType, int] = field(default_factory=dict)
    events: int = 0

    def affected(self) -> int:
        return sum(len(v[0]) for v in self.touched.values())


def keep_mask(ids: Sequence[str], ratio: float, seed: int) -> np.ndarray:
    """Deterministic node sample: an id is kept iff its seeded hash falls below ``ratio``."""
    if ratio >= 1.0:
        return np.ones(len(ids), dtype=bool)
    salted = np.asarray([f"{seed}:{x}" for x in ids], dtype=object)
    h = pd.util.hash_array(salted)
    return (h / 2.0**64) < ratio


def _positions(idx: Tensor, nodes: Tensor) -> tuple[Tensor, Tensor]:
    """Position of each of ``nodes`` in ``idx`` (distinct node indices) and whether it is there at all."""
    if idx.numel() == 0:
        return torch.zeros_like(nodes), torch.zeros_like(nodes, dtype=torch.bool)
    order = torch.argsort(idx)
    srt = idx[order]
    at = torch.searchsorted(srt, nodes).clamp_max(srt.numel() - 1)
    return order[at], srt[at] == nodes


class HeteroGraph:
    """The live heterogeneous graph on one device."""

    def __init__(
        self,
        device: torch.device | str = "cpu",
        *,
        space: FeatureSpace | None = None,
        sample_ratio: float = 1.0,
        sample_seed: int = 0,
        compact_min: int = 50_000,
    ) -> None:
        if not 0 < sample_ratio <= 1:
            raise ValueError(f"sample_ratio must be within (0, 1], not {sample_ratio}")
        self.device = torch.device(device)
        self.space = space or FeatureSpace()
        self.sample_ratio = sample_ratio
        self.sample_seed = sample_seed
        self.compact_min = compact_min
        self.nodes: dict[str, NodeTable] = {t: NodeTable(t, self.space, self.device) for t in NODE_TYPES}
        self.edges: dict[EdgeType, EdgeTable] = {et: EdgeTable(self.device) for et in FORWARD_EDGE_TYPES}
        self.last_seq = 0
        self._adj: dict[EdgeType, Adjacency] = {}

    # ---------------------------------------------------------------- sizes

    def num_nodes(self, node_type: str | None = None) -> int:
        if node_type is None:
            return sum(len(t) for t in self.nodes.values())
        return len(self.nodes[node_type])

    def num_edges(self, et: EdgeType | None = None) -> int:
        if et is None:
            return 2 * sum(len(t) for t in self.edges.values())
        return len(self.edges[FORWARD_OF[et][0]])

    def statistics(self) -> dict[str, Any]:
        return {
            "nodes": {t: self.num_nodes(t) for t in NODE_TYPES},
            "edges": {edge_key(et): self.num_edges(et) for et in FORWARD_EDGE_TYPES},
            "last_seq": self.last_seq,
            "sample_ratio": self.sample_ratio,
        }

    # ---------------------------------------------------------------- structure access

    def adjacency(self, et: EdgeType) -> Adjacency:
        a = self._adj.get(et)
        if a is None:
            a = self._adj[et] = Adjacency(self, et)
        return a

    def edge_index(self, et: EdgeType) -> Tensor:
        fwd, rev = FORWARD_OF[et]
        t = self.edges[fwd]
        src, dst = t.src.view, t.dst.view
        return torch.stack([dst, src]) if rev else torch.stack([src, dst])

    def edge_index_dict(self) -> dict[EdgeType, Tensor]:
        return {et: self.edge_index(et) for et in EDGE_TYPES}

    def raw_features(
        self, node_type: str, idx: Tensor | None = None, hidden: Mapping[EdgeType, tuple[Tensor, Tensor]] | None = None
    ) -> RawFeatures:
        """Attributes of nodes ``idx`` (default: all), with their current in-degree per edge type.

        ``hidden``: per forward edge type, (src, dst) of edges a training step hides from the message
        passing; they are taken out of the degrees too, or the degree feature gives the hidden edge
        away (a user with one order would always have order-degree >= 1 as a positive, never at test)."""
        table = self.nodes[node_type]
        whole = idx is None
        if idx is None:
            idx = torch.arange(len(table), device=self.device)
            num, cat, seq = table.numeric.view, table.categorical.view, table.sequence.view
        else:
            num, cat, seq = table.numeric.view[idx], table.categorical.view[idx], table.sequence.view[idx]
        incoming = [et for et in EDGE_TYPES if et[2] == node_type]
        deg = torch.stack([self.adjacency(et).in_degree(idx) for et in incoming], dim=1).float() if incoming else torch.zeros((len(idx), 0), device=self.device)
        if hidden:
            for col, et in enumerate(incoming):
                fwd, rev = FORWARD_OF[et]
                h = hidden.get(fwd)
                if h is None or h[0].numel() == 0:
                    continue
                ends = h[0] if rev else h[1]
                pos, ok = (ends, torch.ones_like(ends, dtype=torch.bool)) if whole else _positions(idx, ends)
                deg[:, col].index_add_(0, pos[ok], torch.full((int(ok.sum()),), -1.0, device=self.device))
        return RawFeatures(num, cat, seq, idx + 1, deg)

    def node_ids(self, node_type: str, idx: Tensor | np.ndarray | Sequence[int]) -> list[str]:
        ids = self.nodes[node_type].ids
        arr = idx.tolist() if isinstance(idx, (Tensor, np.ndarray)) else idx
        return [ids[i] for i in arr]

    def to_hetero_data(self) -> Any:
        """A PyG ``HeteroData`` view (node counts, edge_index, edge_time, edge seq) for interop."""
        from torch_geometric.data import HeteroData

        data = HeteroData()
        for t in NODE_TYPES:
            data[t].num_nodes = self.num_nodes(t)
        for et in EDGE_TYPES:
            fwd = FORWARD_OF[et][0]
            data[et].edge_index = self.edge_index(et)
            data[et].edge_time = self.edges[fwd].ts.view
            data[et].edge_seq = self.edges[fwd].seq.view
        return data

    # ---------------------------------------------------------------- updates

    def apply_events(self, events: Iterable[tuple[int, Event]]) -> GraphDelta:
        """Apply ``(seq, event)`` pairs in seq order; events at or before ``last_seq`` are skipped."""
        return self.apply(EventBatch.from_events(events))

    def apply(self, batch: EventBatch) -> GraphDelta:
        delta = GraphDelta()
        if len(batch) == 0:
            self.last_seq = max(self.last_seq, batch.upto)
            return delta
        fresh = batch.seq > self.last_seq
        if not fresh.all():
            batch = _take(batch, np.flatnonzero(fresh))
            if len(batch) == 0:
                self.last_seq = max(self.last_seq, batch.upto)
                return delta
        types = np.asarray(batch.type, dtype=object)
        users = np.asarray(batch.user, dtype=object)
        targets = np.asarray(batch.target, dtype=object)
        keep = self._sample_filter(types, users, targets)
        if not keep.all():
            idx = np.flatnonzero(keep)
            last = int(batch.seq[-1])
            batch = _take(batch, idx)
            types, users, targets = types[idx], users[idx], targets[idx]
            if len(batch) == 0:
                self.last_seq = max(self.last_seq, last, batch.upto)
                return delta
        else:
            last = int(batch.seq[-1])
        n = len(batch)
        delta.events = n

        # subject and target node of every event, in appearance order (subject first)
        subj_type = np.array([ATTRIBUTE_EVENTS.get(t) or "user" for t in batch.type], dtype=object)
        subj_id = np.where(np.isin(types, ["product.listed", "app.listed"]), targets, users)
        tgt_type = np.array([RELATIONS[t][2] if t in RELATIONS else None for t in batch.type], dtype=object)
        app_type = np.empty(2 * n, dtype=object)
        app_id = np.empty(2 * n, dtype=object)
        app_type[0::2], app_type[1::2] = subj_type, tgt_type
        app_id[0::2], app_id[1::2] = subj_id, targets
        present = app_type != None  # noqa: E711 - elementwise on an object array
        for t in NODE_TYPES:
            ids = app_id[present & (app_type == t)]
            if len(ids) == 0:
                continue
            table = self.nodes[t]
            new = [x for x in pd.unique(ids) if x not in table.index]
            if new:
                table.add(new)
                delta.new_nodes[t] = len(new)

        touched: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {t: [] for t in NODE_TYPES}
        self._apply_attributes(batch, types, subj_type, subj_id, touched)
        self._apply_interactions(batch, types, users, targets, touched, delta)
        for t, parts in touched.items():
            if parts:
                idx = np.concatenate([p[0] for p in parts])
                seq = np.concatenate([p[1] for p in parts])
                ts = np.concatenate([p[2] for p in parts])
                order = np.argsort(seq, kind="stable")
                idx, seq, ts = idx[order], seq[order], ts[order]
                delta.touched[t] = (idx, seq, ts)
                table = self.nodes[t]
                ti = torch.as_tensor(idx, device=self.device)
                table.last_seq.view.scatter_reduce_(0, ti, torch.as_tensor(seq, device=self.device), "amax")
                table.last_ts.view.scatter_reduce_(0, ti, torch.as_tensor(ts, device=self.device), "amax")
        self.last_seq = max(self.last_seq, last, batch.upto)
        return delta

    def _sample_filter(self, types: np.ndarray, users: np.ndarray, targets: np.ndarray) -> np.ndarray:
        if self.sample_ratio >= 1.0:
            return np.ones(len(types), dtype=bool)
        keep = np.ones(len(types), dtype=bool)
        has_user = users != None  # noqa: E711
        keep[has_user] = keep_mask(list(users[has_user]), self.sample_ratio, self.sample_seed)
        calls = types == "call"
        if calls.any():
            keep[calls] &= keep_mask(list(targets[calls]), self.sample_ratio, self.sample_seed)
        return keep

    def _apply_attributes(
        self,
        batch: EventBatch,
        types: np.ndarray,
        subj_type: np.ndarray,
        subj_id: np.ndarray,
        touched: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
    ) -> None:
        is_attr = np.isin(types, list(ATTRIBUTE_EVENTS))
        if not is_attr.any():
            return
        for t in NODE_TYPES:
            sel = np.flatnonzero(is_attr & (subj_type == t))
            if len(sel) == 0:
                continue
            table = self.nodes[t]
            idx = table.lookup(list(subj_id[sel]))
            full = types[sel] != "user.updated"
            # full definitions: the last one of each node in this batch wins
            f = sel[full]
            if len(f):
                fidx = idx[full]
                last = ~pd.Series(fidx).duplicated(keep="last").to_numpy()
                rows = [_payload(batch.payload[i]) for i in f[last]]
                num, cat, seq = self.space.encode(t, rows)
                ti = torch.as_tensor(fidx[last], device=self.device)
                table.numeric.view[ti] = torch.as_tensor(num, device=self.device)
                table.categorical.view[ti] = torch.as_tensor(cat, device=self.device)
                table.sequence.view[ti] = torch.as_tensor(seq, device=self.device)
            # partial updates after the node's last full definition in this batch, in order
            last_full_seq: dict[int, int] = {}
            for i, node in zip(f.tolist(), idx[full].tolist()):
                last_full_seq[node] = int(batch.seq[i])
            for i, node in zip(sel[~full].tolist(), idx[~full].tolist()):
                if int(batch.seq[i]) < last_full_seq.get(node, -1):
                    continue
                cur = (
                    table.numeric.view[node].cpu().numpy(),
                    table.categorical.view[node].cpu().numpy(),
                    table.sequence.view[node].cpu().numpy(),
                )
                num, cat, seq = self.space.merge(t, cur, _payload(batch.payload[i]))
                table.numeric.view[node] = torch.as_tensor(num, device=self.device)
                table.categorical.view[node] = torch.as_tensor(cat, device=self.device)
                table.sequence.view[node] = torch.as_tensor(seq, device=self.device)
            touched[t].append((idx, batch.seq[sel], batch.ts[sel]))

    def _apply_interactions(
        self,
        batch: EventBatch,
        types: np.ndarray,
        users: np.ndarray,
        targets: np.ndarray,
        touched: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
        delta: GraphDelta,
    ) -> None:
        for etype, et in RELATIONS.items():
            sel = np.flatnonzero(types == etype)
            if len(sel) == 0:
                continue
            src = self.nodes[et[0]].lookup(list(users[sel]))
            dst = self.nodes[et[2]].lookup(list(targets[sel]))
            seq, ts = batch.seq[sel], batch.ts[sel]
            self.edges[et].append(src, dst, ts, seq)
            delta.new_edges[et] = len(sel)
            for node_type, idx in ((et[0], src), (et[2], dst)):
                deg = self.nodes[node_type].degree.view
                deg.index_add_(0, torch.as_tensor(idx, device=self.device), torch.ones(len(idx), device=self.device))
                touched[node_type].append((idx, seq, ts))


def _take(batch: EventBatch, idx: np.ndarray) -> EventBatch:
    il = idx.tolist()
    return EventBatch(
        batch.seq[idx],
        [batch.type[i] for i in il],
        [batch.user[i] for i in il],
        [batch.target[i] for i in il],
        batch.ts[idx],
        [batch.payload[i] for i in il],
        batch.upto,
    )


def _payload(p: Any) -> Mapping[str, Any]:
    if p is None:
        return {}
    if isinstance(p, (str, bytes)):
        return json.loads(p)
    return p


# ------------------------------------------------------------------------------------------ from the store


def read_batches(
    store: EventStore, from_seq: int = 1, to_seq: int | None = None, chunk: int = 200_000
) -> Iterable[EventBatch]:
    """Graph events from the log as columnar batches; payloads are fetched for attribute events only."""
    types_sql = ",".join(f"'{t}'" for t in GRAPH_EVENT_TYPES)
    attr_sql = ",".join(f"'{t}'" for t in ATTRIBUTE_EVENTS)
    upper = to_seq if to_seq is not None else 2**62
    cursor = from_seq
    while True:
        rows = store.conn.execute(
            f"SELECT seq, type, user_id, target_id, ts, CASE WHEN type IN ({attr_sql}) THEN payload END "
            f"FROM events WHERE seq >= ? AND seq <= ? AND type IN ({types_sql}) ORDER BY seq LIMIT ?",
            (cursor, upper, chunk),
        ).fetchall()
        if not rows:
            return
        seq, types, users, targets, ts, payloads = zip(*rows)
        yield EventBatch(np.asarray(seq, np.int64), list(types), list(users), list(targets), np.asarray(ts, np.float64), list(payloads))
        cursor = rows[-1][0] + 1
        if len(rows) < chunk:
            return


def build_graph(
    store: EventStore,
    *,
    device: torch.device | str = "cpu",
    sample_ratio: float = 1.0,
    sample_seed: int = 0,
    upto_seq: int | None = None,
    compact_min: int = 50_000,
    progress: Callable[[float, str], None] | None = None,
) -> HeteroGraph:
    """The seed's ``build_graph_from_snapshot``: the graph of the log up to ``upto_seq`` (default: all).

    With ``sample_ratio < 1`` a deterministic share of users is kept (products and apps are a small
    catalogue and are all kept), with the events among kept nodes.
    """
    graph = HeteroGraph(device, sample_ratio=sample_ratio, sample_seed=sample_seed, compact_min=compact_min)
    end = store.last_seq() if upto_seq is None else min(upto_seq, store.last_seq())
    for batch in read_batches(store, 1, end):
        graph.apply(batch)
        if progress and end:
            progress(min(1.0, int(batch.seq[-1]) / end), f"graph: read up to seq {int(batch.seq[-1]):,}")
    graph.last_seq = max(graph.last_seq, end)
    return graph


def graph_statistics(settings: Any) -> dict[str, Any]:
    """Node and edge counts per type, straight from the log (no graph is built)."""
    from storage.projections import Embeddings, Models

    if not settings.db.exists():
        raise FileNotFoundError(f"no database at {settings.db}; run `ups generate` first")
    with EventStore(settings.db, readonly=True) as store:
        conn = store.conn
        inter = ",".join(f"'{t}'" for t in RELATIONS)
        users = conn.execute(
            "SELECT count(*) FROM (SELECT user_id FROM events WHERE user_id IS NOT NULL AND type IN "
            f"('user.registered','user.updated',{inter}) UNION SELECT target_id FROM events WHERE type = 'call')"
        ).fetchone()[0]
        products = conn.execute(
            "SELECT count(DISTINCT target_id) FROM events WHERE type IN ('product.listed','product.order','product.click')"
        ).fetchone()[0]
        apps = conn.execute(
            "SELECT count(DISTINCT target_id) FROM events WHERE type IN ('app.listed','app.usage','app.click')"
        ).fetchone()[0]
        by_type = store.counts_by_type()
        models = Models(conn)
        return {
            "nodes": {"user": int(users), "product": int(products), "app": int(apps)},
            "edges": {edge_key(et): int(by_type.get(ev, 0)) for ev, et in RELATIONS.items()},
            "edge_types": [edge_key(et) for et in EDGE_TYPES],
            "embeddings": {t: Embeddings(conn).count(t) for t in NODE_TYPES},
            "model_version": models.latest_version("hgt"),
            "last_seq": store.last_seq(),
        }


__all__ = [
    "NODE_TYPES",
    "RELATIONS",
    "FORWARD_EDGE_TYPES",
    "EDGE_TYPES",
    "FORWARD_OF",
    "METADATA",
    "GRAPH_EVENT_TYPES",
    "EdgeType",
    "edge_key",
    "reverse_of",
    "Growable",
    "NodeTable",
    "EdgeTable",
    "Adjacency",
    "EventBatch",
    "GraphDelta",
    "HeteroGraph",
    "keep_mask",
    "read_batches",
    "build_graph",
    "graph_statistics",
]
