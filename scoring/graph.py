"""The heterogeneous user / product / app graph, built from the event log.

Node maps id <-> index per type, raw node attributes, and one edge list per interaction type (event
time and seq as edge attributes), all in growable device buffers: new events append nodes and edges
in place (``apply``) instead of rebuilding a ``HeteroData``. Reverse edge types are views of the
forward lists. Node indices follow first appearance in seq order, so a graph built from the log up
to seq N and then updated with the events after N equals one built up to the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from pydantic_core import from_json
from torch import Tensor

from storage.columns import EventBatch
from storage.events import Event

from .adjacency import Adjacency
from .features import FeatureSpace, RawFeatures
from .graph_buffers import EdgeTable, NodeTable
from .graph_schema import (
    ATTRIBUTE_EVENTS, EDGE_TYPES, FORWARD_EDGE_TYPES, FORWARD_OF, GRAPH_EVENT_TYPES, NODE_TYPES, RELATIONS, EdgeType,
)


def events_batch(events: Iterable[tuple[int, Event]]) -> EventBatch:
    """The graph-relevant ``(seq, event)`` pairs as columns; ``upto`` counts the others too."""
    upto = 0
    rows = []
    for s, e in events:
        upto = max(upto, s)
        if e.type in _GRAPH_TYPES:
            rows.append((s, e.type, e.user_id, e.target_id, e.ts, e.payload))
    return EventBatch.from_rows(rows, upto)


_GRAPH_TYPES = frozenset(GRAPH_EVENT_TYPES)


@dataclass
class GraphDelta:
    """What one ``apply`` changed: nodes to re-embed (with the seq and time of the change), counts."""

    touched: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)  # idx, seq, ts
    new_nodes: dict[str, int] = field(default_factory=dict)
    new_edges: dict[EdgeType, int] = field(default_factory=dict)
    events: int = 0


def keep_mask(ids: Sequence[str], ratio: float, seed: int) -> np.ndarray:
    """Deterministic node sample: an id is kept iff its seeded hash falls below ``ratio``."""
    if ratio >= 1.0:
        return np.ones(len(ids), dtype=bool)
    codes, uniq = pd.factorize(np.asarray(ids, dtype=object))
    salted = np.asarray([f"{seed}:{x}" for x in uniq], dtype=object)  # once per distinct id
    h = pd.util.hash_array(salted)
    return ((h / 2.0**64) < ratio)[codes]


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
        return self.apply(events_batch(events))

    def apply(self, batch: EventBatch) -> GraphDelta:
        """Apply a batch of graph events (seq order): no Python step per event, only per distinct
        event type, node type and attribute event."""
        delta = GraphDelta()
        end = max(batch.upto, int(batch.seq[-1]) if len(batch) else 0)
        if len(batch):
            fresh = batch.seq > self.last_seq
            if not fresh.all():
                batch = batch.take(np.flatnonzero(fresh))
        if len(batch):
            keep = self._sample_filter(batch)
            if not keep.all():
                batch = batch.take(np.flatnonzero(keep))
        if len(batch) == 0:
            self.last_seq = max(self.last_seq, end)
            return delta
        delta.events = len(batch)
        codes, names = pd.factorize(batch.type)
        subj, tgt = self._register_nodes(batch, codes, names, delta)
        touched: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {t: [] for t in NODE_TYPES}
        self._apply_attributes(batch, codes, names, subj, touched)
        self._apply_interactions(batch, codes, names, subj, tgt, touched, delta)
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
        self.last_seq = max(self.last_seq, end)
        return delta

    def apply_attributes(self, batch: EventBatch, subj: np.ndarray) -> None:
        """Attribute events (seq order) of nodes already registered, ``subj`` their node indices: their
        payloads set the attributes as :meth:`apply` sets them (last marks and degrees left alone)."""
        codes, names = pd.factorize(batch.type)
        self._apply_attributes(batch, codes, names, subj, {t: [] for t in NODE_TYPES})

    def _register_nodes(
        self, batch: EventBatch, codes: np.ndarray, names: np.ndarray, delta: GraphDelta
    ) -> tuple[np.ndarray, np.ndarray]:
        """Node index of every event's subject and target (-1: none), registering new nodes in order
        of first appearance (an event's subject before its target)."""
        n = len(batch)
        kinds = {t: k for k, t in enumerate(NODE_TYPES)}
        subj_kind = np.array([kinds[ATTRIBUTE_EVENTS.get(t) or "user"] for t in names], dtype=np.int8)[codes]
        tgt_kind = np.array([kinds[RELATIONS[t][2]] if t in RELATIONS else -1 for t in names], dtype=np.int8)[codes]
        listed = np.array([t in ("product.listed", "app.listed") for t in names], dtype=bool)[codes]
        kind = np.empty(2 * n, dtype=np.int8)
        ids = np.empty(2 * n, dtype=object)
        kind[0::2], kind[1::2] = subj_kind, tgt_kind
        ids[0::2] = np.where(listed, batch.target, batch.user)
        ids[1::2] = batch.target
        index = np.full(2 * n, -1, dtype=np.int64)
        for k, t in enumerate(NODE_TYPES):
            at = np.flatnonzero(kind == k)
            if len(at):
                index[at], added = self.nodes[t].register(ids[at])
                if added:
                    delta.new_nodes[t] = added
        return index[0::2], index[1::2]

    def _sample_filter(self, batch: EventBatch) -> np.ndarray:
        if self.sample_ratio >= 1.0:
            return np.ones(len(batch), dtype=bool)
        keep = np.ones(len(batch), dtype=bool)
        has_user = batch.user != None  # noqa: E711 - elementwise on an object array
        keep[has_user] = keep_mask(batch.user[has_user], self.sample_ratio, self.sample_seed)
        calls = batch.type == "call"
        if calls.any():
            keep[calls] &= keep_mask(batch.target[calls], self.sample_ratio, self.sample_seed)
        return keep

    def _apply_attributes(
        self,
        batch: EventBatch,
        codes: np.ndarray,
        names: np.ndarray,
        subj: np.ndarray,
        touched: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
    ) -> None:
        for t in NODE_TYPES:
            full_codes = [c for c, name in enumerate(names) if ATTRIBUTE_EVENTS.get(name) == t and name != "user.updated"]
            part_codes = [c for c, name in enumerate(names) if ATTRIBUTE_EVENTS.get(name) == t and name == "user.updated"]
            sel = np.flatnonzero(np.isin(codes, full_codes + part_codes))
            if len(sel) == 0:
                continue
            table = self.nodes[t]
            idx = subj[sel]
            full = np.isin(codes[sel], full_codes)
            # full definitions: the last one of each node in this batch wins
            f = sel[full]
            if len(f):
                fidx = idx[full]
                last = ~pd.Series(fidx).duplicated(keep="last").to_numpy()
                rows = [_payload(p) for p in batch.payload[f[last]]]
                num, cat, seq = self.space.encode(t, rows)
                ti = torch.as_tensor(fidx[last], device=self.device)
                table.numeric.view[ti] = torch.as_tensor(num, device=self.device)
                table.categorical.view[ti] = torch.as_tensor(cat, device=self.device)
                table.sequence.view[ti] = torch.as_tensor(seq, device=self.device)
            if not full.all():
                self._apply_updates(table, batch, sel, idx, full)
            touched[t].append((idx, batch.seq[sel], batch.ts[sel]))

    def _apply_updates(self, table: NodeTable, batch: EventBatch, sel: np.ndarray, idx: np.ndarray, full: np.ndarray) -> None:
        """Partial updates after the node's last full definition in this batch, in order (rare events:
        one step each)."""
        last_full_seq: dict[int, int] = {}
        for i, node in zip(sel[full].tolist(), idx[full].tolist()):
            last_full_seq[node] = int(batch.seq[i])
        t = table.node_type
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

    def _apply_interactions(
        self,
        batch: EventBatch,
        codes: np.ndarray,
        names: np.ndarray,
        subj: np.ndarray,
        tgt: np.ndarray,
        touched: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
        delta: GraphDelta,
    ) -> None:
        ends: dict[str, list[np.ndarray]] = {t: [] for t in NODE_TYPES}
        for c, name in enumerate(names):
            et = RELATIONS.get(name)
            if et is None:
                continue
            sel = np.flatnonzero(codes == c)
            src, dst = subj[sel], tgt[sel]
            seq, ts = batch.seq[sel], batch.ts[sel]
            self.edges[et].append(src, dst, ts, seq)
            delta.new_edges[et] = len(sel)
            for node_type, idx in ((et[0], src), (et[2], dst)):
                ends[node_type].append(idx)
                touched[node_type].append((idx, seq, ts))
        for node_type, parts in ends.items():
            if parts:
                deg = self.nodes[node_type].degree.view
                idx = np.concatenate(parts)
                if 8 * len(idx) >= deg.shape[0]:  # a bulk build: counting beats scattering
                    deg += torch.as_tensor(np.bincount(idx, minlength=deg.shape[0]), dtype=deg.dtype, device=self.device)
                else:  # a live batch: touch only its nodes (no graph-sized copy to the device)
                    ti = torch.as_tensor(idx, device=self.device)
                    deg.index_add_(0, ti, torch.ones(len(idx), dtype=deg.dtype, device=self.device))


def _payload(p: Any) -> Mapping[str, Any]:
    if p is None:
        return {}
    if isinstance(p, (str, bytes)):
        return from_json(p)
    return p
