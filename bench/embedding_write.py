"""Embedding-write benchmark: ``Embeddings.put_block`` (float32 blobs cut from the model's output
array, one transaction per chunk) against a raw ``executemany`` of the same rows, already built as
tuples, with the same upsert into the same schema, measured in the same run; first into an empty
table, then over the rows written (a new model version). Target: >= 300 000 rows/s.

    python -m bench.embedding_write [--rows 200000] [--dim 32] [--chunk 50000]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from storage.bare import upsert_embeddings
from storage.db import connect, transaction
from storage.embeddings import Embeddings

TARGET_ROWS_PER_S = 300_000


def _rates(n: int, t: float, cpu: float) -> tuple[float, float]:
    """Rows per wall second and per CPU second of this process (the second is what a shared,
    loaded machine distorts least)."""
    return n / (time.perf_counter() - t), n / max(1e-9, time.process_time() - cpu)


def _raw(conn: sqlite3.Connection, rows: list[tuple[Any, ...]], chunk: int) -> tuple[float, float]:
    t, cpu = time.perf_counter(), time.process_time()
    for a in range(0, len(rows), chunk):
        upsert_embeddings(conn, rows[a : a + chunk])
    return _rates(len(rows), t, cpu)


def _blocks(conn: sqlite3.Connection, ids: list[str], vectors: np.ndarray, seqs: np.ndarray, version: int,
            chunk: int) -> tuple[float, float]:
    emb = Embeddings(conn)
    t, cpu = time.perf_counter(), time.process_time()
    for a in range(0, len(ids), chunk):
        with transaction(conn):
            emb.put_block("user", ids[a : a + chunk], vectors[a : a + chunk], version, seqs[a : a + chunk])
    return _rates(len(ids), t, cpu)


def bench(rows: int, dim: int, chunk: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    ids = [f"U{i:07d}" for i in rng.permutation(rows)]  # first-appearance order, not key order
    seqs = rng.integers(1, 10 * rows, rows)
    out: dict[str, float] = {"rows": rows, "dim": dim}
    with tempfile.TemporaryDirectory() as tmp:
        raw, ups = connect(Path(tmp) / "raw.db"), connect(Path(tmp) / "ups.db")
        for version, label in ((1, "insert"), (2, "update")):
            vectors = rng.standard_normal((rows, dim), dtype=np.float32)
            now = time.time()
            # the baseline gets its rows ready-made: building them is not part of its time
            tuples = [("user", ids[i], vectors[i].tobytes(), dim, version, int(seqs[i]), now) for i in range(rows)]
            out[f"raw_{label}_rows_per_s"], out[f"raw_{label}_rows_per_cpu_s"] = _raw(raw, tuples, chunk)
            out[f"ups_{label}_rows_per_s"], out[f"ups_{label}_rows_per_cpu_s"] = _blocks(ups, ids, vectors, seqs, version, chunk)
            got = Embeddings(ups).get("user", ids[rows // 2])
            assert got is not None and np.array_equal(got.vector, vectors[rows // 2]) and got.model_version == version
        raw.close()
        ups.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--json", metavar="PATH", type=Path, help="also write the figures as JSON")
    args = ap.parse_args()
    res = bench(args.rows, args.dim, args.chunk)
    print(f"{res['rows']:,} rows of dim {res['dim']}, one transaction per {args.chunk:,}; rows/s (rows per CPU-second)")
    for label in ("insert", "update"):
        ups, raw = res[f"ups_{label}_rows_per_s"], res[f"raw_{label}_rows_per_s"]
        ups_c, raw_c = res[f"ups_{label}_rows_per_cpu_s"], res[f"raw_{label}_rows_per_cpu_s"]
        verdict = "OK" if ups >= TARGET_ROWS_PER_S else "BELOW TARGET"
        print(f"{label:>6}: Embeddings.put_block {ups:>10,.0f} ({ups_c:>10,.0f})   raw executemany {raw:>10,.0f} "
              f"({raw_c:>10,.0f})   ratio {ups / raw:.2f}   (target >= {TARGET_ROWS_PER_S:,} rows/s: {verdict})")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
