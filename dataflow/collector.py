"""The cycle collector tuned for throughput, in the processes that move the event stream."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def collector_for_throughput() -> Iterator[None]:
    """The flow, replay and the log writer allocate millions of short-lived containers (item dicts,
    Events, rows, profile updates) that reference counting frees. With the default thresholds the
    collector's full passes over the long-lived heap (profiles, everything imported: pandas,
    ...) dominate: in the log writer, 2.5 of its 6.5 CPU-s per 300 000 events. What is loaded by now
    is frozen (left out of every pass) and young passes come less often; cycles are still freed."""
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()
