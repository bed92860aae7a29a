"""Keeping the users' call neighbourhoods (:mod:`scoring.neighbourhood`) current between full passes.

The stored neighbourhood of user i is N_i = P·(P·X) at row i, X the user embeddings and P the
row-normalised call adjacency (both directions, each call counted; an isolated user averages over
themself). When the refresher writes new embeddings for users J, N changes only within two calls of
J: J's own rows are queued at once, J itself as "sources" whose two-call balls are queued later
(indices only), and every row is computed when written, from the embeddings of that moment, by
``neighbourhood_rows`` (two gathers over call partners: the function the full pass's
``neighbourhood_means`` runs over every user). So once nothing is queued every stored row equals what a
full pass over the same embeddings gives.

A new call edge needs no mark of its own: its two ends are re-embedded (both are touched), and the
rows written for them mark their two-call balls with the edge in place.

Hub fan-out: a user with d partners, each with about d partners, marks about d² rows per re-embedding,
and a hub is re-embedded with each of its calls. Three things bound that: marks are de-duplicated
(a row pending for many reasons, or a source re-embedded again before its ball was queued, is
handled once); the balls' expansion and the rows are worked off in batches of :attr:`BATCH` users
within a time slice the refresher gives them after its embedding refreshes (a share of the tick
while embeddings wait, so the event -> embedding latency loses at most that share, and all the time
left otherwise); and the users whose own embedding changed go first ("near"), the fan-out behind them
("far") with the refresher's waiting credit, so a hub's ball is written at the rate ticks allow
without starving or outranking live users. The far rows' lag is their backlog over that rate.
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from .adjacency import rows_of
from .embed import EmbeddingRowT
from .graph import HeteroGraph
from .graph_schema import RELATIONS, reverse_of
from .neighbourhood import NODE_TYPE, neighbourhood_rows
from .pending_users import PendingUsers

_CALLS = RELATIONS["call"]
#: the queue's ranks: users whose own embedding changed, then the rest of their two-call balls
NEAR, FAR = 1.0, 0.0


def call_rows(graph: HeteroGraph, users: np.ndarray) -> sp.csr_matrix:
    """A[users], A = C + Cᵀ over the graph's users, C[i, j] the calls from i to j (a self-call counts
    twice), read from the graph's call adjacency (kept current as calls arrive)."""
    parts = graph.adjacency(_CALLS).host_parts() + graph.adjacency(reverse_of(_CALLS)).host_parts()
    return rows_of(parts, users, graph.num_nodes("user"))


class NeighbourhoodRefresh:
    """The queue of neighbourhood rows to write, and their computation."""

    #: users per batch (rows computed, and as many sources' balls queued before them): the first, before
    #: the cost per user is measured, and the bounds of the sizes fitted to the time left. A batch costs
    #: less per user the larger it is (their two-call balls overlap), so the fit errs on the short side
    FIRST_BATCH, MIN_BATCH, MAX_BATCH = 256, 32, 4096

    def __init__(self, graph: HeteroGraph, device: torch.device, wait_weight: float) -> None:
        self.graph = graph
        self.device = device
        self.queue = PendingUsers(wait_weight)
        self.sources = PendingUsers(wait_weight)  # re-embedded users whose two-call balls are not queued yet
        self._cost: float | None = None  # seconds per user of a batch (moving average)
        # a counter of ``changed`` calls: when each user's row was last computed and each source last
        # changed, so a ball leaves out the rows computed since (from the changed embedding already)
        self._epoch = 0
        self._written = np.zeros(0, dtype=np.int64)
        self._changed_at = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        """Work left: rows queued and sources to expand."""
        return self.queue.count + self.sources.count

    def neighbourhoods(self, users: np.ndarray, emb: Tensor) -> np.ndarray:
        """The call neighbourhoods of ``users`` (sorted, distinct) over the user embeddings ``emb``, as
        ``neighbourhood_means`` over every user gives them."""
        def vectors(u: np.ndarray) -> np.ndarray:
            return emb[torch.as_tensor(u, device=emb.device)].to("cpu", torch.float64).numpy()

        return neighbourhood_rows(users, lambda u: call_rows(self.graph, u), vectors, self.graph.num_nodes("user"))

    def _ball(self, users: np.ndarray) -> np.ndarray:
        """``users`` and their call partners, sorted and distinct."""
        return np.unique(np.concatenate([users, call_rows(self.graph, users).indices]))

    # ---------------------------------------------------------------- marks

    def mark_all(self, now: float, users: np.ndarray | None = None) -> None:
        """Queue (far) the rows of ``users`` (default: every user), forgetting what was queued."""
        self.queue.clear()
        self.sources.clear()
        n = self.graph.num_nodes("user")
        self.queue.push(np.arange(n) if users is None else np.asarray(users, dtype=np.int64), FAR, now)

    def changed(self, users: np.ndarray, now: float) -> None:
        """Users whose embedding was rewritten: their own rows first; the rest of their two-call balls
        are queued as :meth:`rows` gets to them."""
        if not len(users):
            return
        self._epoch += 1
        self._fit()
        self._changed_at[users] = self._epoch
        self.queue.push(users, NEAR, now)
        self.sources.push(users, FAR, now)

    def _fit(self) -> None:
        n = self.graph.num_nodes("user")
        if len(self._written) < n:
            grow = max(n, 2 * len(self._written)) - len(self._written)
            self._written = np.concatenate([self._written, np.zeros(grow, dtype=np.int64)])
            self._changed_at = np.concatenate([self._changed_at, np.zeros(grow, dtype=np.int64)])

    def _expand(self, users: np.ndarray) -> None:
        if not len(users):
            return
        self._fit()
        ball = self._ball(self._ball(users))
        ball = ball[self._written[ball] < self._changed_at[users].max()]
        self.queue.push(ball, FAR, float(np.min(self.sources.marked_at[users])))

    def restore(self, pending: tuple[tuple[str, float, float], ...], sources: tuple[tuple[str, float, float], ...]) -> None:
        """Queue again what a snapshot had pending (:meth:`pending`)."""
        index = self.graph.nodes["user"].index
        for queue, items in ((self.queue, pending), (self.sources, sources)):
            known = [(index[nid], at, rank) for nid, at, rank in items if nid in index]
            if known:
                users, at, rank = (np.asarray(c) for c in zip(*known))
                queue.push(users, rank, at)
                if queue is self.sources:  # changed after every row this refresher has written
                    self._epoch += 1
                    self._fit()
                    self._changed_at[users] = self._epoch

    def pending(self) -> tuple[tuple[tuple[str, float, float], ...], tuple[tuple[str, float, float], ...]]:
        """(user id, marked at, rank) of the rows queued, and of the sources."""
        ids = self.graph.nodes["user"].ids

        def rows(queue: PendingUsers) -> tuple[tuple[str, float, float], ...]:
            users, at, rank = queue.items()
            return tuple((ids[i], float(a), float(k)) for i, a, k in zip(users.tolist(), at, rank))

        return rows(self.queue), rows(self.sources)

    # ---------------------------------------------------------------- rows

    @torch.no_grad()
    def rows(self, emb: Tensor, version: int, until: float) -> list[EmbeddingRowT]:
        """Rows of the most urgent queued users over the user embeddings ``emb``, a batch of sources
        expanded before each batch of rows, until ``until`` (``time.perf_counter``; one batch at least,
        so the queue moves however small the slice); the seq is the user's own last event, as a full
        pass writes."""
        out: list[EmbeddingRowT] = []
        ids = self.graph.nodes["user"].ids
        first = True
        while len(self) and (first or time.perf_counter() < until):
            first = False
            left = until - time.perf_counter()
            n = self.FIRST_BATCH if self._cost is None else self.MAX_BATCH if math.isinf(left) else int(left / self._cost)
            n = min(self.MAX_BATCH, max(self.MIN_BATCH, n))
            t = time.perf_counter()
            sources = self.sources.pop(n)
            self._expand(sources)  # (a popped user's mark time stays readable)
            picked = self.queue.pop(n)
            if len(picked):
                vec = self.neighbourhoods(picked, emb)
                seqs = self.graph.nodes["user"].last_seq.view[torch.as_tensor(picked, device=self.device)].tolist()
                out += [(NODE_TYPE, ids[i], vec[k], version, seqs[k]) for k, i in enumerate(picked.tolist())]
                self._fit()
                self._written[picked] = self._epoch
            done = max(len(sources), len(picked))
            if done >= self.MIN_BATCH:
                per = (time.perf_counter() - t) / done
                self._cost = per if self._cost is None else 0.7 * self._cost + 0.3 * per
        return out
