"""Events as columns: what the graph reads from the log in bulk (no per-event objects)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(slots=True)
class EventBatch:
    """Events as columns, in seq order."""

    seq: np.ndarray
    type: list[str]
    user: list[str | None]
    target: list[str | None]
    ts: np.ndarray
    payload: list[Any]  # dict, JSON text, or None where the reader left it out
    #: the last seq the batch covers, counting events that are not in it (labels, rules ...)
    upto: int = 0

    def __len__(self) -> int:
        return len(self.type)

    @classmethod
    def empty(cls, upto: int = 0) -> "EventBatch":
        return cls(np.zeros(0, np.int64), [], [], [], np.zeros(0), [], upto)
