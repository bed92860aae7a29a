"""The heterogeneous user / product / app graph , built from the event log.

Node maps id <-> index per type, raw node attributes, and one edge list per interaction type (event
time and seq as edge attributes), all in growable device buffers: new events append nodes and edges
in place (``apply``) instead of rebuilding a ``HeteroData``. Reverse edge types are views of the
forward lists. Node indices follow first appearance in seq order, so a graph built from the log up
to seq N and then updated with the events after N equals one built up to the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from storage.columns import EventBatch
from storage.events import Event

from .adjacency import Adjacency
from .features import FeatureSpace, RawFeatures
from .graph_buffers import EdgeTable, NodeTable
from .graph_schema import (
    ATTRIBUTE_EVENTS, EDGE_TYPES, FORWARD_EDGE_TYPES, FORWARD_OF, GRAPH_EVENT_TYPES, NODE_TYPES, RELATIONS, EdgeType, edge_key,
)


def graph_batch(events: Iterable[tuple[int, Event]]) -> EventBatch:
    """The graph events of ``(seq, event)`` pairs as columns; ``upto`` counts every event given."""
    upto = 0
    rows = []
    for s, e in events:
        upto = max(upto, s)
        if e.type in _GRAPH_TYPES:
            rows.append((s, e.type, e.user_id, e.target_id, e.ts, e.payload))
    if not rows:
        return EventBatch.empty(upto)
    seq, types, users, targets, ts, payloads = zip(*rows)
    return EventBatch(np.asarray(seq, np.int64), list(types), list(users), list(targets),
                      np.asarray(ts, np.float64), list(payloads), upto)


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
        return self.apply(graph_batch(events))

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
