"""Graphs kept between the jobs of a warm job worker: built from the log once, then brought up to the
log's end before each use (``HeteroGraph.apply`` extends them in place, as the live refresh does), so a
job pays for the events appended since the previous one instead of reading the whole log again."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from config.db_location import DbLocation
from storage import Store

from .graph import HeteroGraph
from .graph_loader import build_graph, read_batches


@dataclass(frozen=True, slots=True)
class GraphKey:
    """What makes two graphs of the log the same graph."""

    db: DbLocation
    device: str
    sample_ratio: float
    sample_seed: int
    compact_min: int


class GraphCache:
    """The ``keep`` most recently used graphs (a full and a sampled one, typically), each caught up with
    the log when handed out. One per worker process; not shared between threads."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._graphs: OrderedDict[GraphKey, HeteroGraph] = OrderedDict()

    def __len__(self) -> int:
        return len(self._graphs)

    def graph(
        self,
        store: Store,
        db: DbLocation,
        *,
        device: torch.device,
        sample_ratio: float,
        sample_seed: int,
        compact_min: int,
        progress: Callable[[float, str], None] | None = None,
    ) -> HeteroGraph:
        """The graph of the whole log as it is now (built on first use, then kept)."""
        key = GraphKey(db.resolve() if isinstance(db, Path) else db, str(device), sample_ratio, sample_seed, compact_min)
        graph = self._graphs.pop(key, None)
        if graph is None:
            graph = build_graph(store, device=device, sample_ratio=sample_ratio, sample_seed=sample_seed,
                                compact_min=compact_min, progress=progress)
        else:
            end = store.last_seq()
            for batch in read_batches(store, graph.last_seq + 1, end):
                graph.apply(batch)
            graph.last_seq = max(graph.last_seq, end)
            if progress:
                progress(1.0, f"graph: caught up to seq {end:,}")
        self._graphs[key] = graph
        while len(self._graphs) > self.keep:
            self._graphs.popitem(last=False)
        return graph
