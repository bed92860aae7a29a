"""Device buffers the live graph grows in place: a growable tensor, node tables and edge lists."""

from __future__ import annotations

import math
from itertools import repeat
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .features import FeatureSpace


class Growable:
    """A tensor with spare capacity along dim 0; ``view`` is the filled part. Doubles when full."""

    def __init__(self, tail: Sequence[int], dtype: torch.dtype, device: torch.device, fill: float = 0) -> None:
        self.tail = tuple(tail)
        self.dtype = dtype
        self.fill = fill
        self.data = torch.full((16, *self.tail), fill, dtype=dtype, device=device)
        self.n = 0

    @property
    def view(self) -> Tensor:
        return self.data[: self.n]

    def reserve(self, extra: int) -> None:
        need = self.n + extra
        if need > self.data.shape[0]:
            cap = max(need, 2 * self.data.shape[0])
            # empty, not filled: every row past n is written by append or extend_fill before it is read
            new = torch.empty((cap, *self.tail), dtype=self.dtype, device=self.data.device)
            new[: self.n] = self.data[: self.n]
            self.data = new

    def append(self, values: Tensor | np.ndarray) -> tuple[int, int]:
        v = torch.as_tensor(values, dtype=self.dtype).to(self.data.device)
        self.reserve(v.shape[0])
        start = self.n
        self.data[start : start + v.shape[0]] = v
        self.n += v.shape[0]
        return start, self.n

    def extend_fill(self, count: int) -> None:
        self.reserve(count)
        self.data[self.n : self.n + count] = self.fill
        self.n += count


class NodeTable:
    """The nodes of one type: ids, index, raw attributes, degree, last event seq/time."""

    def __init__(self, node_type: str, space: FeatureSpace, device: torch.device) -> None:
        self.node_type = node_type
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        k, c, (s, length) = space.widths(node_type)
        self.numeric = Growable((k,), torch.float32, device, fill=math.nan)
        self.categorical = Growable((c,), torch.long, device)
        self.sequence = Growable((s, length), torch.long, device)
        self.degree = Growable((), torch.float32, device)
        self.last_seq = Growable((), torch.long, device)
        self.last_ts = Growable((), torch.float64, device, fill=-math.inf)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, new_ids: Sequence[str]) -> None:
        """Register nodes (attributes missing until an attribute event sets them)."""
        base = len(self.ids)
        self.index.update(zip(new_ids, range(base, base + len(new_ids))))
        self.ids.extend(new_ids)
        for buf in (self.numeric, self.categorical, self.sequence, self.degree, self.last_seq, self.last_ts):
            buf.extend_fill(len(new_ids))

    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(self.index.__getitem__, ids), dtype=np.int64, count=len(ids))

    def register(self, ids: np.ndarray) -> tuple[np.ndarray, int]:
        """Index of each of ``ids`` (an object array), adding the unknown ones in order of first
        appearance; and how many were added. Hashes each event's id once (pandas), the dict sees
        each distinct id once."""
        codes, uniq = pd.factorize(ids)
        found = np.fromiter(map(self.index.get, uniq, repeat(-1)), dtype=np.int64, count=len(uniq))
        new = found < 0
        added = int(new.sum())
        if added:
            base = len(self.ids)
            self.add(uniq[new].tolist())
            found[new] = np.arange(base, base + added)
        return found[codes], added


class EdgeTable:
    """Edges of one forward edge type, in seq order: src, dst (node indices), event time, seq."""

    def __init__(self, device: torch.device) -> None:
        self.src = Growable((), torch.long, device)
        self.dst = Growable((), torch.long, device)
        self.ts = Growable((), torch.float64, device)
        self.seq = Growable((), torch.long, device)

    def __len__(self) -> int:
        return self.src.n

    def append(self, src: Tensor | np.ndarray, dst: Tensor | np.ndarray, ts: Tensor | np.ndarray, seq: Tensor | np.ndarray) -> None:
        self.src.append(src)
        self.dst.append(dst)
        self.ts.append(ts)
        self.seq.append(seq)
