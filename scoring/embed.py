"""Writing embeddings of every node with the newest model (``embed_all``) and the users' call
neighbourhoods made of them (:mod:`scoring.neighbourhood`, what the fusion reads), and the row format the
incremental refresh shares: ``(node type, node id, float32 vector, model version, seq)``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import torch
from torch import Tensor

from config.progress import Progress
from storage import Store, open_store, store_exists

from .graph import HeteroGraph
from .graph_loader import build_graph
from .graph_sample import sample_users
from .graph_schema import NODE_TYPES
from .model_io import load_model
from . import neighbourhood
from .operation_results import EmbeddingsWritten

if TYPE_CHECKING:
    from .graph_cache import GraphCache

EmbeddingRowT = tuple[str, str, np.ndarray, int, int]


def embedding_rows(graph: HeteroGraph, node_type: str, idx: Tensor, vectors: Tensor, version: int) -> list[EmbeddingRowT]:
    """Rows for ``Embeddings.put_many``: seq is the last event that changed the node."""
    ids = graph.node_ids(node_type, idx)
    vec = vectors.detach().to("cpu", torch.float32).numpy()
    seqs = graph.nodes[node_type].last_seq.view[idx].tolist()
    return [(node_type, nid, vec[i], version, int(seqs[i])) for i, nid in enumerate(ids)]


def write_rows(store: Store, rows: Iterable[EmbeddingRowT], batch: int = 20_000) -> int:
    """Upsert rows, ``batch`` per transaction."""
    n = 0
    buf: list[EmbeddingRowT] = []
    for r in rows:
        buf.append(r)
        if len(buf) >= batch:
            with store.transaction():
                n += store.embeddings.put_many(buf)
            buf = []
    if buf:
        with store.transaction():
            n += store.embeddings.put_many(buf)
    return n


def write_all(store: Store, graph: HeteroGraph, emb: Mapping[str, Tensor], version: int, chunk: int = 50_000,
              progress: Progress | None = None) -> int:
    """Upsert every node's embedding, one transaction per ``chunk`` nodes of a type, in blocks
    (``Embeddings.put_block``: no Python step per row); ``progress`` gets the rows written of all."""
    n = 0
    total = sum(len(graph.nodes[t]) for t in NODE_TYPES)
    for t in NODE_TYPES:
        table = graph.nodes[t]
        for a in range(0, len(table), chunk):
            b = min(len(table), a + chunk)
            vectors = emb[t][a:b].detach().to("cpu", torch.float32).numpy()
            seqs = table.last_seq.view[a:b].cpu().numpy()
            with store.transaction():
                n += store.embeddings.put_block(t, table.ids[a:b], vectors, version, seqs)
            if progress:
                progress(n / max(1, total), f"{n:,}/{total:,} rows")
    return n


def write_neighbourhoods(store: Store, graph: HeteroGraph, user_emb: Tensor, version: int, chunk: int = 50_000) -> int:
    """Upsert every user's call neighbourhood (the mean embedding two calls around them) computed from
    ``user_emb``, the graph's user embeddings; the seq is the user's own. Between full passes the
    incremental refresh keeps them current (:mod:`scoring.neighbourhood_refresh`)."""
    calls = graph.edges[("user", "calls", "user")]
    src, dst = (t.view.cpu().numpy() for t in (calls.src, calls.dst))
    means = neighbourhood.neighbourhood_means(src, dst, user_emb.detach().to("cpu", torch.float32).numpy())
    users = graph.nodes["user"]
    seqs = users.last_seq.view.cpu().numpy()
    written = 0
    for a in range(0, len(means), chunk):
        b = min(len(means), a + chunk)
        with store.transaction():
            written += store.embeddings.put_block(neighbourhood.NODE_TYPE, users.ids[a:b], means[a:b], version, seqs[a:b])
    return written


def embed_all(
    settings: Any, sample_ratio: float = 1.0, progress: Progress | None = None, graphs: "GraphCache | None" = None,
    graph: HeteroGraph | None = None,
) -> EmbeddingsWritten:
    """Embeddings for every node of the (sampled) graph with the newest HGT model, written to the store.
    With ``graphs`` (a warm job worker's), the graph is taken from it and caught up with the log; with
    ``graph`` (the whole store's, already read), it is that graph (or its users' sample)."""
    from config.device import resolve_device

    t0 = time.perf_counter()
    report = progress or (lambda f, m: None)
    if not store_exists(settings.db):
        raise FileNotFoundError(f"no database at {settings.db}; run `ups generate` first")
    if not 0 < sample_ratio <= 1:
        raise ValueError(f"sample_ratio must be within (0, 1], not {sample_ratio}")
    device = resolve_device(settings.device)
    with open_store(settings.db) as store:
        loaded = load_model(store, device=device)
        if loaded is None:
            raise ValueError("no HGT model registered yet; run `ups train` first")
        graph_progress: Progress = lambda f, m: report(0.3 * f, m)  # noqa: E731
        if graph is not None:
            graph = sample_users(graph, sample_ratio, settings.train_seed)
        elif graphs is not None:
            graph = graphs.graph(store, settings.db, device=device, sample_ratio=sample_ratio,
                                 sample_seed=settings.train_seed, compact_min=settings.graph_compact_min,
                                 progress=graph_progress)
        else:
            graph = build_graph(
                store, device=device, sample_ratio=sample_ratio, sample_seed=settings.train_seed,
                compact_min=settings.graph_compact_min, progress=graph_progress,
            )
        total = sum(graph.num_nodes(t) for t in NODE_TYPES)
        # the count is the rows written (the stage's rate: rows per second of forward and write)
        report(0.3, f"0/{total:,} rows, forward pass")
        emb = loaded.embedder.eval().embed_all(graph, settings.embed_chunk_edges, lambda f, m: report(0.3 + 0.5 * f, m))
        report(0.8, f"0/{total:,} rows, writing embeddings")
        written = write_all(store, graph, emb, loaded.version, progress=lambda f, m: report(0.8 + 0.2 * f, m))
        written += write_neighbourhoods(store, graph, emb["user"], loaded.version)
    report(1.0, "done")
    return EmbeddingsWritten(
        model_version=loaded.version,
        nodes={t: graph.num_nodes(t) for t in NODE_TYPES},
        written=written,
        last_seq=graph.last_seq,
        sample_ratio=sample_ratio,
        duration_s=round(time.perf_counter() - t0, 3),
        device=str(device),
    )


__all__ = ["embed_all", "embedding_rows", "write_rows", "write_all", "write_neighbourhoods", "EmbeddingRowT"]
