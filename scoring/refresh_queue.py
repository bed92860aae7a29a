"""The refresh's pending nodes: a de-duplicating max-heap with a waiting credit, so nothing starves."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Iterable

NodeKey = tuple[str, int]  # (node type, node index)


@dataclass
class Pending:
    priority: float
    seq: int  # the newest event that touched the node
    ts: float  # its event time
    marked_at: float  # wall time the node first became pending (latency is measured from here)
    key: float = 0.0  # its heap key: the priority less the waiting credit of later marks (see PriorityQueue)


class PriorityQueue:
    """Max-heap of nodes with de-duplication: a node is pending once, at its highest priority, with the
    newest seq that touched it and the time it first became pending. Stale heap entries are skipped.

    Waiting raises a node's standing by ``wait_weight`` per second, so nothing starves behind a stream
    of better-ranked marks. Every pending node gains at the same rate, so ranking by
    ``priority + w * (now - marked_at)`` is ranking by the static ``priority - w * marked_at``: a
    plain heap stays valid as time passes."""

    def __init__(self, wait_weight: float = 0.0) -> None:
        self.wait_weight = wait_weight
        self._heap: list[tuple[float, int, NodeKey]] = []
        self._by_age: list[tuple[float, int, NodeKey]] = []  # min-heap on marked_at, for the oldest age
        self._pending: dict[NodeKey, Pending] = {}
        self._counter = itertools.count()
        self._origin: float | None = None  # keeps the keys' magnitude small (marked_at is epoch seconds)

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, key: object) -> bool:
        return key in self._pending

    def get(self, key: NodeKey) -> Pending | None:
        return self._pending.get(key)

    def _key(self, priority: float, marked_at: float) -> float:
        if self._origin is None:
            self._origin = marked_at
        return priority - self.wait_weight * (marked_at - self._origin)

    def push(self, key: NodeKey, priority: float, seq: int, ts: float, now: float) -> None:
        cur = self._pending.get(key)
        if cur is None:
            p = Pending(priority, seq, ts, now)
            p.key = self._key(priority, now)
            self._pending[key] = p
            c = next(self._counter)
            heapq.heappush(self._heap, (-p.key, c, key))
            heapq.heappush(self._by_age, (now, c, key))
            return
        cur.seq = max(cur.seq, seq)
        cur.ts = max(cur.ts, ts)
        if priority > cur.priority:
            cur.priority = priority
            cur.key = self._key(priority, cur.marked_at)
            heapq.heappush(self._heap, (-cur.key, next(self._counter), key))

    def pop(self, n: int) -> list[tuple[NodeKey, Pending]]:
        out: list[tuple[NodeKey, Pending]] = []
        while self._heap and len(out) < n:
            neg, _, key = heapq.heappop(self._heap)
            p = self._pending.get(key)
            if p is None or -neg != p.key:
                continue  # refreshed already, or superseded by a higher-priority entry
            del self._pending[key]
            out.append((key, p))
        return out

    def discard(self, keys: Iterable[NodeKey]) -> list[tuple[NodeKey, Pending]]:
        """Remove these nodes (refreshed another way); their heap entries go stale."""
        out = [(k, p) for k in keys if (p := self._pending.pop(k, None)) is not None]
        if len(self._heap) > 4 * len(self._pending) + 4096:  # drop the stale entries now and then
            self._heap = [(-p.key, next(self._counter), k) for k, p in self._pending.items()]
            heapq.heapify(self._heap)
            self._by_age = [(p.marked_at, next(self._counter), k) for k, p in self._pending.items()]
            heapq.heapify(self._by_age)
        return out

    def clear(self) -> list[tuple[NodeKey, Pending]]:
        items = list(self._pending.items())
        self._pending.clear()
        self._heap.clear()
        self._by_age.clear()
        return items

    def oldest_marked_at(self) -> float | None:
        while self._by_age:
            m, _, key = self._by_age[0]
            p = self._pending.get(key)
            if p is not None and p.marked_at == m:
                return m
            heapq.heappop(self._by_age)
        return None

    def items(self) -> list[tuple[NodeKey, Pending]]:
        return list(self._pending.items())
