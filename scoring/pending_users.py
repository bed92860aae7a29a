"""A priority queue of user indices marked in bulk: the rows the call-neighbourhood refresh has to write.

A two-call ball is thousands of users per tick, and a Python heap push each cost more than the embedding
refresh that caused them; so marks are taken as arrays. Each push de-duplicates against per-user arrays
(O(1) a mark) and adds the marks that are new or raised as one sorted run; the runs are merged like a
binary counter (the newest into the one before while it is at least half its size: O(log n) runs, an
entry re-sorted O(log n) times), and a pop merges the runs' heads. An entry whose user was popped or
raised since it was added is skipped when met (lazy deletion). No step scans every user but ``clear``
and ``items`` (a new model, a snapshot).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class _Run:
    """Entries sorted best first: by ``key`` (the negated priority), then user; ``head`` the first not met."""

    key: np.ndarray
    user: np.ndarray
    stamp: np.ndarray
    head: int = 0

    def __len__(self) -> int:
        return len(self.key) - self.head


def _sorted_run(key: np.ndarray, user: np.ndarray, stamp: np.ndarray) -> _Run:
    order = np.lexsort((user, key))
    return _Run(key[order], user[order], stamp[order])


class PendingUsers:
    """Users whose row is pending, each once at its highest rank, ranked by ``rank + wait_weight·(now -
    marked_at)`` like :class:`~scoring.refresh_queue.PriorityQueue` (as a static key: every pending user
    gains at the same rate); ties by user index."""

    def __init__(self, wait_weight: float) -> None:
        self.wait_weight = wait_weight
        self.pending = np.zeros(0, dtype=bool)
        self.rank = np.zeros(0)
        self.marked_at = np.zeros(0)
        self._stamp = np.zeros(0, dtype=np.int64)  # the entry that stands for each pending user
        self._stamps = 0
        self._runs: list[_Run] = []
        self._origin: float | None = None  # keeps the keys small (marked_at is epoch seconds)
        self.count = 0

    def _fit(self, n: int) -> None:
        if n > len(self.pending):
            grow = max(n, 2 * len(self.pending), 1024) - len(self.pending)
            self.pending = np.concatenate([self.pending, np.zeros(grow, dtype=bool)])
            self.rank = np.concatenate([self.rank, np.zeros(grow)])
            self.marked_at = np.concatenate([self.marked_at, np.zeros(grow)])
            self._stamp = np.concatenate([self._stamp, np.zeros(grow, dtype=np.int64)])

    def _current(self, user: np.ndarray, stamp: np.ndarray) -> np.ndarray:
        """Which entries still stand for their user."""
        return self.pending[user] & (self._stamp[user] == stamp)

    def push(self, users: np.ndarray, rank: float | np.ndarray, marked_at: float | np.ndarray) -> None:
        """Mark ``users`` (a user already pending keeps their first mark time and their higher rank)."""
        users = np.asarray(users, dtype=np.int64)
        if not len(users):
            return
        if self._origin is None:
            self._origin = float(np.min(marked_at))
        self._fit(int(users.max()) + 1)
        rank = np.broadcast_to(np.asarray(rank, dtype=np.float64), users.shape)
        at = np.broadcast_to(np.asarray(marked_at, dtype=np.float64), users.shape)
        distinct = np.unique(users)
        was = self.pending[distinct]
        before = np.where(was, self.rank[distinct], -np.inf)
        new = ~self.pending[users]
        self.marked_at[users[new]] = at[new]
        self.rank[users[new]] = -np.inf
        np.maximum.at(self.rank, users, rank)
        self.pending[distinct] = True
        self.count += int((~was).sum())
        moved = distinct[self.rank[distinct] > before]  # new, or raised: an entry for their key now
        if len(moved):
            stamp = np.arange(self._stamps, self._stamps + len(moved), dtype=np.int64)
            self._stamps += len(moved)
            self._stamp[moved] = stamp
            self._runs.append(_sorted_run(-self._key(moved), moved, stamp))
            while len(self._runs) > 1 and 2 * len(self._runs[-1]) >= len(self._runs[-2]):
                self._merge_last()

    def _key(self, users: np.ndarray) -> np.ndarray:
        return self.rank[users] - self.wait_weight * (self.marked_at[users] - (self._origin or 0.0))

    def _merge_last(self) -> None:
        b, a = self._runs.pop(), self._runs.pop()
        key, user, stamp = (np.concatenate([x[a.head:], y[b.head:]])
                            for x, y in ((a.key, b.key), (a.user, b.user), (a.stamp, b.stamp)))
        keep = self._current(user, stamp)
        self._runs.append(_sorted_run(key[keep], user[keep], stamp[keep]))

    def pop(self, n: int) -> np.ndarray:
        """The ``n`` best-ranked pending users (sorted by index), no longer pending."""
        out: list[np.ndarray] = []
        need = min(n, self.count)
        while need > 0 and self._runs:
            # each run's next ``need`` entries; a run cut short bounds what the others may give now
            wins = [(r.key[r.head:r.head + need], r.user[r.head:r.head + need], r.stamp[r.head:r.head + need], r)
                    for r in self._runs]
            key, user, stamp = (np.concatenate([w[i] for w in wins]) for i in range(3))
            ok = self._current(user, stamp)
            key, user = key[ok], user[ok]
            cut = [(w[0][-1], w[1][-1]) for w in wins if len(w[0]) and w[3].head + need < len(w[3].key)]
            if cut:
                k, u = min(cut)
                below = (key < k) | ((key == k) & (user <= u))
                key, user = key[below], user[below]
            took = user[np.lexsort((user, key))[:need]]
            self.pending[took] = False
            self.count -= len(took)
            need -= len(took)
            out.append(took)
            for w in wins:  # past the entries met: popped now, or stale
                r, met = w[3], ~self._current(w[1], w[2])
                r.head += len(met) if met.all() else int(np.argmin(met))
            self._runs = [r for r in self._runs if len(r)]
        return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)

    def clear(self) -> None:
        self.pending[:] = False
        self._runs = []
        self.count = 0

    def items(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(users, marked_at, rank) of the pending users."""
        idx = np.flatnonzero(self.pending)
        return idx, self.marked_at[idx], self.rank[idx]
