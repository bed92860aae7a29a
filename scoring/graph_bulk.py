"""The graph filled from the store's graph columns (integer-coded events, ``storage.graph_columns``) in
one step: node lists, edge lists, degrees and last-event marks by numpy and torch over whole columns,
attributes from the attribute events' payloads. Gives what :meth:`HeteroGraph.apply` gives for the
same events, without hashing an id per event."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from storage.columns import EventBatch
from storage.graph_columns import KINDS, NODE_TYPES as CODED_TYPES, GraphColumnsData, node_types_of

from .graph import HeteroGraph, keep_mask
from .graph_schema import NODE_TYPES, RELATIONS

# the graph's node types and the coded ones are one list (a code's type is its position)
assert tuple(CODED_TYPES) == NODE_TYPES


def fill_graph(graph: HeteroGraph, data: GraphColumnsData) -> None:
    """Apply ``data``'s events to an empty ``graph`` (which then stands at ``data.upto``)."""
    if graph.num_nodes() or graph.last_seq:
        raise ValueError("fill_graph fills an empty graph")
    kind, subj, tgt, seq, ts = data.kind, data.subj, data.tgt, data.seq, data.ts
    subj_type, tgt_type = node_types_of(kind)
    if graph.sample_ratio < 1.0:
        kept = keep_mask(data.node_ids[0], graph.sample_ratio, graph.sample_seed)
        keep = np.ones(len(kind), bool)
        keep[subj_type == 0] = kept[subj[subj_type == 0]]
        keep[tgt_type == 0] &= kept[tgt[tgt_type == 0]]
        sel = np.flatnonzero(keep)
        kind, subj, tgt, seq, ts = kind[sel], subj[sel], tgt[sel], seq[sel], ts[sel]
        subj_type, tgt_type = subj_type[sel], tgt_type[sel]
        subj, tgt = _first_appearance(graph, data, subj, subj_type, tgt, tgt_type)
    else:
        for nt, ids in zip(NODE_TYPES, data.node_ids):
            graph.nodes[nt].add(ids)
    subj, tgt = subj.astype(np.int64), tgt.astype(np.int64)
    for k, event_type in enumerate(KINDS):
        et = RELATIONS.get(event_type)
        if et is not None:
            sel = np.flatnonzero(kind == k)
            graph.edges[et].append(subj[sel], tgt[sel], ts[sel], seq[sel])
    _attributes(graph, data, kind, subj, seq, ts)
    interaction = np.isin(kind, _INTERACTION_KINDS)
    dev = graph.device
    for t, nt in enumerate(NODE_TYPES):
        table = graph.nodes[nt]
        s, d = subj_type == t, np.flatnonzero(tgt_type == t)
        # degree: the interactions it is an end of; last event: any event naming it
        degree = np.bincount(subj[s & interaction], minlength=len(table)) + np.bincount(tgt[d], minlength=len(table))
        table.degree.view.add_(torch.as_tensor(degree, dtype=table.degree.dtype, device=dev))
        s = np.flatnonzero(s)
        idx = torch.as_tensor(np.concatenate([subj[s], tgt[d]]), device=dev)
        if len(idx):
            table.last_seq.view.scatter_reduce_(0, idx, torch.as_tensor(np.concatenate([seq[s], seq[d]]), device=dev), "amax")
            table.last_ts.view.scatter_reduce_(0, idx, torch.as_tensor(np.concatenate([ts[s], ts[d]]), device=dev), "amax")
    graph.last_seq = max(graph.last_seq, data.upto)


_INTERACTION_KINDS = [k for k, name in enumerate(KINDS) if name in RELATIONS]


def _first_appearance(graph: HeteroGraph, data: GraphColumnsData, subj: np.ndarray, subj_type: np.ndarray,
                      tgt: np.ndarray, tgt_type: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Register the nodes of the kept events in order of first appearance (an event's subject before its
    target); their codes -> node indices."""
    n = len(subj)
    code = np.empty(2 * n, np.int64)
    typ = np.empty(2 * n, np.int8)
    code[0::2], code[1::2] = subj, tgt
    typ[0::2], typ[1::2] = subj_type, tgt_type
    index = np.full(2 * n, -1, np.int64)
    for t, nt in enumerate(NODE_TYPES):
        at = np.flatnonzero(typ == t)
        if not len(at):
            continue
        uniq, first = np.unique(code[at], return_index=True)
        order = uniq[np.argsort(first, kind="stable")]
        remap = np.full(len(data.node_ids[t]), -1, np.int64)
        remap[order] = np.arange(len(order))
        ids = data.node_ids[t]
        graph.nodes[nt].add([ids[i] for i in order.tolist()])
        index[at] = remap[code[at]]
    return index[0::2], index[1::2]


def _attributes(graph: HeteroGraph, data: GraphColumnsData, kind: np.ndarray, subj: np.ndarray, seq: np.ndarray,
                ts: np.ndarray) -> None:
    """The attribute events' payloads set their nodes' attributes (as ``apply`` sets them)."""
    attr = np.flatnonzero(~np.isin(kind, _INTERACTION_KINDS))
    if not len(attr):
        return
    at = np.searchsorted(data.attr_seq, seq[attr])
    if not np.array_equal(data.attr_seq[np.minimum(at, len(data.attr_seq) - 1)], seq[attr]):
        raise ValueError("the graph columns name attribute events the log does not hold")
    payload = np.empty(len(at), dtype=object)
    payload[:] = [data.attr_payload[i] for i in at.tolist()]
    names = np.asarray(KINDS, dtype=object)[kind[attr]]
    none = np.full(len(attr), None, dtype=object)
    batch = EventBatch(seq[attr], pd.Categorical(names), none, none.copy(), ts[attr], payload, int(seq[attr][-1]))
    graph.apply_attributes(batch, subj[attr])
