"""A user's call neighbourhood as the fusion's graph input: the mean HGT embedding of the users within
two calls of them (either direction), stored next to the embeddings as node type ``user_neighbourhood``.

Why not the user's own embedding: it mostly re-encodes what the profile already says about the user (fee,
tenure, activity: a linear read of it recovers the individual churn driver about as well as the profile
does), so a GNN head on it and a rule head on the profile both learn the same thing and their mix gains
little. What only the graph knows is the circle a user calls in: churn spreads through call communities,
and averaging the embeddings over two hops of calls cancels each member's own traits and keeps what they
share. On the mock data a linear read of this mean recovers the community's churn driver 2-3 times better
than the own embedding (R² 0.58-0.67 against 0.11-0.25 on four datasets), and a fusion of the profile with it beats either side.

A parameter-free mean (a fixed two-step propagation over the call graph, as in SGC/APPNP) rather than
more HGT layers: it needs no training, is cheap at a million users (two sparse products), and keeps the
embedding's own layers what link prediction trained them for.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse as sp

#: node type of the stored neighbourhood vectors in the embeddings table
NODE_TYPE = "user_neighbourhood"
#: calls away from the user the mean reaches
HOPS = 2


#: A[u]: rows ``u`` of the call-count matrix over all users (both directions, a self-call twice)
CallRows = Callable[[np.ndarray], sp.csr_matrix]
#: the vectors of users ``u`` as float64 rows
Vectors = Callable[[np.ndarray], np.ndarray]


def neighbourhood_rows(users: np.ndarray, call_rows: CallRows, vectors: Vectors, num_users: int,
                       hops: int = HOPS) -> np.ndarray:
    """Rows ``users`` (sorted, distinct) of :func:`neighbourhood_means`, reading only the calls and
    vectors within ``hops`` calls of them: each step the mean over the call partners (an isolated user
    over themself) of the next step's values, the last step the vectors."""
    levels, mats = [np.asarray(users, dtype=np.int64)], []
    for _ in range(hops):
        a = call_rows(levels[-1])
        mats.append(a)
        # every user (a full pass) needs no list of whom their partners are
        levels.append(levels[-1] if len(levels[-1]) == num_users else np.unique(a.indices))
    out = vectors(levels[-1])
    at = np.empty(num_users, dtype=np.int64)  # a user's position in the next step's rows
    for a, rows, cols in zip(reversed(mats), reversed(levels[:-1]), reversed(levels[1:])):
        if len(cols) != num_users:
            at[cols] = np.arange(len(cols))
            a = sp.csr_matrix((a.data, at[a.indices], a.indptr), shape=(a.shape[0], len(cols)))
        degree = np.asarray(a.sum(1)).ravel()
        out = (a @ out) / np.maximum(degree, 1.0)[:, None]
        alone = np.flatnonzero(degree == 0)
        if len(alone):
            out[alone] = vectors(rows[alone])
    return out.astype(np.float32)


def neighbourhood_means(src: np.ndarray, dst: np.ndarray, vectors: np.ndarray, hops: int = HOPS) -> np.ndarray:
    """Row i: the mean of ``vectors`` over the users ``hops`` calls from user i, a call counted in both
    directions and as often as it was made (a frequent partner weighs more). ``src``/``dst`` are row
    indices of ``vectors``. A user without calls keeps their own vector (the only graph view there is)."""
    n = vectors.shape[0]
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
    if len(src) and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n):
        raise ValueError(f"call endpoints must index the {n} vectors")
    ones = np.ones(len(src), dtype=np.float64)
    adj = sp.coo_matrix((ones, (src, dst)), shape=(n, n)).tocsr()
    adj = (adj + adj.T).tocsr()
    x = np.asarray(vectors, dtype=np.float64)
    return neighbourhood_rows(np.arange(n), lambda u: adj if len(u) == n else adj[u],
                              lambda u: x if len(u) == n else x[u], n, hops)
