"""Garbage collection tuned for bulk work that allocates millions of short-lived objects and makes no
reference cycles worth a pass: the flow, the replay, the bulk load of a dataset."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def gc_for_throughput() -> Iterator[None]:
    """Generational GC passes over the large, long-lived heap (profiles, a fold's per-user states)
    would dominate: the heap there on entry is frozen out of them, and young objects are collected
    less often, while the block runs."""
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()
