"""Test fixtures for scoring: fold the log into profiles, and stand-in graph embeddings.

Neither is product code. Profiles are folded with the shared pure ``dataflow.profile.fold`` (what the
flow and its replay write); the stand-in embeddings are a spectral embedding of the user–user call graph
and the user–app graph, so the fusion can be trained and measured before the HGT embeddings exist.

    python tests/scoring_support.py [--users 2000]     # AUCs on the default mock data
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.utils.extmath import randomized_svd

from dataflow.bootstrap import append_dataset
from dataflow.oracle import retention_oracle
from storage import data_config
from dataflow.generator import GeneratorConfig, MockGenerator
from dataflow.profile import PROFILE_TYPES, ProfileState, fold
from scoring.neighbourhood import NODE_TYPE as NEIGHBOURHOOD, neighbourhood_means
from storage.event_store import EventStore
from storage.embeddings import Embeddings
from storage.projections import Profiles

STANDIN_MODEL_VERSION = 0  # no HGT model version: these vectors are a fixture


def fold_profiles(store: EventStore) -> int:
    """Fold the whole log into the ``profiles`` projection (what the dataflow's replay does)."""
    states: dict[str, ProfileState] = {}
    for ev in store.read(types=sorted(PROFILE_TYPES)):
        if ev.user_id is not None:
            states[ev.user_id] = fold(states.get(ev.user_id), ev, ev.seq)
    with store.transaction() as conn:
        return Profiles(conn).upsert_many((uid, st.document(), st.last_seq) for uid, st in states.items())


def standin_embeddings(store: EventStore, dim: int = 32, hops: int = 2) -> dict[str, np.ndarray]:
    """Spectral stand-in for HGT user embeddings: top singular vectors of [X, PX, P²X], where X is each
    user's app-usage share and P the row-normalised call adjacency (with self loops)."""
    users = sorted({e.user_id for e in store.read(types=["user.registered"]) if e.user_id})
    apps = sorted({e.target_id for e in store.read(types=["app.listed"]) if e.target_id})
    ui = {u: i for i, u in enumerate(users)}
    ai = {a: i for i, a in enumerate(apps)}
    calls: list[tuple[int, int]] = []
    uses: list[tuple[int, int]] = []
    for e in store.read(types=["call", "app.usage", "app.click"]):
        if e.user_id not in ui:
            continue
        if e.type == "call" and e.target_id in ui:
            calls.append((ui[e.user_id], ui[e.target_id]))
        elif e.type != "call" and e.target_id in ai:
            uses.append((ui[e.user_id], ai[e.target_id]))
    n = len(users)
    c = np.array(calls, dtype=np.int64).reshape(-1, 2)
    a = sp.coo_matrix((np.ones(len(c)), (c[:, 0], c[:, 1])), shape=(n, n)).tocsr()
    a = a + a.T + sp.identity(n, format="csr")
    p = sp.diags(1.0 / np.asarray(a.sum(1)).ravel()) @ a
    u = np.array(uses, dtype=np.int64).reshape(-1, 2)
    x = sp.coo_matrix((np.ones(len(u)), (u[:, 0], u[:, 1])), shape=(n, len(apps))).tocsr().toarray()
    x = x / np.maximum(x.sum(1, keepdims=True), 1.0)
    blocks = [x]
    for _ in range(hops):
        blocks.append(p @ blocks[-1])
    h = np.hstack(blocks)
    h = h - h.mean(0)
    k = min(dim, min(h.shape) - 1)
    left, s, _ = randomized_svd(h, n_components=k, random_state=0)
    emb = np.zeros((n, dim), dtype=np.float32)
    emb[:, :k] = (left * s).astype(np.float32)
    return {uid: emb[i] for uid, i in ui.items()}


def write_embeddings(store: EventStore, vectors: dict[str, np.ndarray]) -> int:
    """The stand-in user embeddings and, made of them as an embedding pass does, the users' call
    neighbourhoods (what the fusion reads)."""
    seq = store.last_seq()
    users = sorted(vectors)
    at = {u: i for i, u in enumerate(users)}
    calls = np.array([(at[e.user_id], at[e.target_id]) for e in store.read(types=["call"])
                      if e.user_id in at and e.target_id in at], dtype=np.int64).reshape(-1, 2)
    means = neighbourhood_means(calls[:, 0], calls[:, 1], np.stack([vectors[u] for u in users]))
    with store.transaction() as conn:
        return Embeddings(conn).put_many(
            [*(("user", uid, v, STANDIN_MODEL_VERSION, seq) for uid, v in vectors.items()),
             *((NEIGHBOURHOOD, uid, means[i], STANDIN_MODEL_VERSION, seq) for i, uid in enumerate(users))]
        )


def build_db(path: Path, cfg: GeneratorConfig, dim: int = 32, embeddings: bool = True) -> Path:
    """A store with the mock dataset, folded profiles and (optionally) stand-in user embeddings."""
    with EventStore(path) as store:
        store.append([data_config.event(json.loads(json.dumps(asdict(cfg))))])  # what the oracle regenerates
        append_dataset(store, MockGenerator(cfg))
        fold_profiles(store)
        if embeddings:
            write_embeddings(store, standin_embeddings(store, dim))
    return path


@lru_cache(maxsize=None)
def _template(root: str, cfg: GeneratorConfig, dim: int, embeddings: bool) -> Path:
    path = Path(root) / f"template-{cfg.tag}-{dim}-{int(embeddings)}.db"
    return build_db(path, cfg, dim, embeddings)


def copy_db(src: Path, dst: Path) -> Path:
    """A private copy (sqlite backup: consistent even with WAL)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return dst


def scoring_db(tmp_root: Path, dst: Path, cfg: GeneratorConfig, dim: int = 32, embeddings: bool = True) -> Path:
    """A fresh copy of a (once per session) built store: tests may change their copy freely."""
    return copy_db(_template(str(tmp_root), cfg, dim, embeddings), dst)


@lru_cache(maxsize=None)
def _trained_template(root: str, cfg: GeneratorConfig, dim: int) -> tuple[Path, dict]:
    from scoring.service import ScoringService
    from config.settings import Settings

    path = copy_db(_template(root, cfg, dim, True), Path(root) / f"trained-{cfg.tag}-{dim}.db")
    with ScoringService(Settings(db=path)) as svc:
        result = svc.train_fusion(oracle=retention_oracle(path))
    return path, result


def trained_db(tmp_root: Path, dst: Path, cfg: GeneratorConfig, dim: int = 32) -> tuple[Path, dict]:
    """A fresh copy of a store with a trained fusion model (trained once per session), and the training result."""
    path, result = _trained_template(str(tmp_root), cfg, dim)
    return copy_db(path, dst), result


#: small data for most scoring tests (every user labelled, strong enough to train on)
SMALL = GeneratorConfig(users=600, products=20, apps=16, events_per_user=20, community_size=30, label_share=1.0, seed=11)


def main() -> None:
    ap = argparse.ArgumentParser(description="fusion AUCs on the mock data with stand-in embeddings")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--keep", type=Path, help="keep the database here")
    args = ap.parse_args()
    from scoring.service import ScoringService
    from config.settings import Settings

    import tempfile

    tmp = Path(tempfile.mkdtemp())
    db = args.keep or tmp / "ups.db"
    build_db(db, GeneratorConfig(users=args.users, seed=args.seed), args.dim)
    with ScoringService(Settings(db=db)) as svc:
        res = svc.train_fusion(progress=lambda f, m: print(f"{f:5.0%} {m}", file=sys.stderr),
                               oracle=retention_oracle(db))
    print(json.dumps({k: res[k] for k in ("auc", "loss", "model_version", "n_train", "n_test")}, indent=1))
    if not args.keep:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
