"""The cycle collector tuned for throughput (flow, replay, log writer): still frees cycles, and gives
the process its settings back."""

from __future__ import annotations

import gc
import weakref

from dataflow.collector import collector_for_throughput


class _Node:
    other: "_Node"


def test_the_tuned_collector_leaves_what_was_loaded_out_still_frees_cycles_and_restores_the_thresholds() -> None:
    before = gc.get_threshold()
    with collector_for_throughput():
        assert gc.isenabled() and gc.get_freeze_count() > 1000  # the imported modules' objects
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None
    assert gc.get_threshold() == before
