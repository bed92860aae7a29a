"""The neighbourhood refresh's queue of users: each pending once at its highest rank and first mark time,
popped best key first, whatever mix of bulk marks, raises, repeats and pops came before."""

from __future__ import annotations

import numpy as np

from scoring.pending_users import PendingUsers

W = 0.5


class Reference:
    """The same queue the plain way: a dict of the pending users, sorted at each pop."""

    def __init__(self) -> None:
        self.pending: dict[int, tuple[float, float]] = {}  # user -> (rank, marked_at)

    def push(self, users: np.ndarray, rank: np.ndarray, at: float) -> None:
        for u, r in zip(users.tolist(), rank.tolist()):
            old = self.pending.get(u)
            self.pending[u] = (max(r, old[0]), old[1]) if old else (r, at)

    def pop(self, n: int) -> list[int]:
        best = sorted(self.pending, key=lambda u: (-(self.pending[u][0] - W * self.pending[u][1]), u))[:n]
        for u in best:
            del self.pending[u]
        return sorted(best)


def test_pops_follow_rank_and_waiting_through_bulk_marks_raises_and_repeats() -> None:
    rng = np.random.default_rng(3)
    q, ref = PendingUsers(W), Reference()
    popped = 0
    for step in range(400):
        now = 1_000.0 + step * rng.uniform(0, 2)
        if rng.random() < 0.6:
            users = rng.integers(0, 3000, rng.integers(1, 400))  # repeats within and across marks
            rank = rng.choice([0.0, 1.0, 2.5], len(users))
            q.push(users, rank, now)
            ref.push(users, rank, now)
        else:
            n = int(rng.integers(1, 300))
            got = q.pop(n)
            assert got.tolist() == ref.pop(n)
            popped += len(got)
        assert q.count == len(ref.pending)
        if step == 200:  # forgetting everything, as a new model does
            q.clear()
            ref.pending.clear()
    users, at, rank = q.items()
    assert users.tolist() == sorted(ref.pending)
    assert [(r, a) for r, a in zip(rank.tolist(), at.tolist())] == [ref.pending[u] for u in users.tolist()]
    assert popped > 5_000
    assert sorted(q.pop(10**6).tolist()) == sorted(ref.pending) and q.count == 0 and len(q.pop(5)) == 0


def test_a_popped_users_mark_time_stays_readable() -> None:
    q = PendingUsers(W)
    q.push(np.array([4, 2]), 0.0, 10.0)
    q.push(np.array([2]), 1.0, 20.0)  # raised: keeps its first mark time
    assert q.pop(1).tolist() == [2]
    assert q.marked_at[2] == 10.0 and q.count == 1
