"""The graph read from the store: columnar batches of graph events, the whole graph, counts."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from storage.columns import EventBatch
from storage import Store, open_store, store_exists

from .graph import HeteroGraph
from .graph_bulk import fill_graph
from .graph_schema import ATTRIBUTE_EVENTS, EDGE_TYPES, GRAPH_EVENT_TYPES, NODE_TYPES, RELATIONS, edge_key
from .results import GraphStatistics
from .threads import ThreadLimit, read_ahead


def read_batches(
    store: Store, from_seq: int = 1, to_seq: int | None = None, chunk: int = 500_000
) -> Iterable[EventBatch]:
    """Graph events from the log as columnar batches (``chunk`` seqs each); payloads are read for
    attribute events only."""
    return store.read_columns(from_seq, to_seq, GRAPH_EVENT_TYPES, tuple(ATTRIBUTE_EVENTS), chunk)


def build_graph(
    store: Store,
    *,
    device: torch.device | str = "cpu",
    sample_ratio: float = 1.0,
    sample_seed: int = 0,
    upto_seq: int | None = None,
    compact_min: int = 50_000,
    progress: Callable[[float, str], None] | None = None,
    chunk: int = 500_000,
) -> HeteroGraph:
    """The graph of the log up to ``upto_seq`` (default: all).

    With ``sample_ratio < 1`` a deterministic share of users is kept (products and apps are a small
    catalogue and are all kept), with the events among kept nodes.
    """
    graph = HeteroGraph(device, sample_ratio=sample_ratio, sample_seed=sample_seed, compact_min=compact_min)
    end = store.last_seq() if upto_seq is None else min(upto_seq, store.last_seq())
    # one torch thread: the build's tensor work is copies and scatters, which a second OpenMP thread
    # spun for more than it helped (measured: 0.42 -> 0.02 CPU-s of appends per 1M edges)
    with ThreadLimit(1):
        # the store's graph columns (integer-coded events) as far as they reach, the log's rows after
        fill_graph(graph, store.graph_columns.read(end))
        if progress and end:
            progress(min(1.0, graph.last_seq / end), f"graph: columns up to seq {graph.last_seq:,}")
        for batch in read_ahead(read_batches(store, graph.last_seq + 1, end, chunk)):
            graph.apply(batch)
            if progress and end:
                progress(min(1.0, batch.upto / end), f"graph: read up to seq {batch.upto:,}")
    graph.last_seq = max(graph.last_seq, end)
    return graph


def graph_statistics(settings: Any) -> GraphStatistics:
    """Node and edge counts per type, straight from the log (no graph is built)."""
    if not store_exists(settings.db):
        raise FileNotFoundError(f"no database at {settings.db}; run `ups generate` first")
    with open_store(settings.db, readonly=True) as store:
        user_events = [e for e, t in ATTRIBUTE_EVENTS.items() if t == "user"] + list(RELATIONS)
        targets = {t: [e for e, nt in ATTRIBUTE_EVENTS.items() if nt == t]
                   + [e for e, et in RELATIONS.items() if et[2] == t] for t in ("product", "app")}
        by_type = store.counts_by_type()
        return {
            "nodes": {
                "user": store.distinct_users(user_events, [e for e, et in RELATIONS.items() if et[2] == "user"]),
                "product": store.distinct_targets(targets["product"]),
                "app": store.distinct_targets(targets["app"]),
            },
            "edges": {edge_key(et): int(by_type.get(ev, 0)) for ev, et in RELATIONS.items()},
            "edge_types": [edge_key(et) for et in EDGE_TYPES],
            "embeddings": {t: store.embeddings.count(t) for t in NODE_TYPES},
            "model_version": store.models.latest_version("hgt"),
            "last_seq": store.last_seq(),
        }
