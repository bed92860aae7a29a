"""Write the generator's initial dataset into the event store, a batch per transaction."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable

from storage import Store
from storage.columns import NewEvents

from .collector import collector_for_throughput
from .generator import MockGenerator


@dataclass(slots=True)
class LoadSummary:
    events: int
    appended: int
    duplicates: int
    seconds: float
    last_seq: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


#: event ids of generated product listings: ``{tag}-pP00000`` (MockGenerator.catalogue_events)
_LISTING_ID = re.compile(r"[0-9a-f]{8}-pP")


def dataset_tags(store: Store) -> list[str]:
    """Tags of the generated datasets in the store (each config and generator version has its own)."""
    prefixes = store.event_id_prefixes("product.listed", 11)
    return sorted({p[:8] for p in prefixes if _LISTING_ID.fullmatch(p)})


def append_dataset(
    store: Store,
    gen: MockGenerator,
    batch_size: int = 50_000,
    on_progress: Callable[[int], None] | None = None,
    on_appended: Callable[[NewEvents], None] | None = None,
) -> LoadSummary:
    """Append the dataset, a transaction per ``batch_size`` events; re-running it is a no-op (event ids
    are deterministic). The events travel as columns (no ``Event`` object per row); ``on_appended`` gets
    each batch once it is in the log."""
    from scoring.threads import read_ahead

    t0 = time.perf_counter()
    total = appended = dups = 0
    # the next batch's columns are drawn on a worker thread while SQLite inserts this one (it releases
    # the GIL for each row's step): on two free cores the draw's time mostly hides behind the insert's.
    # GC passes over the fold's per-user states (``on_appended``) were half its time
    with collector_for_throughput(), store.bulk_load():
        for batch in read_ahead(gen.dataset_columns(batch_size)):
            new, already = store.append_columns(batch)
            total += len(batch)
            appended += new
            dups += already
            if on_appended:
                on_appended(batch)
            if on_progress:
                on_progress(len(batch))
    return LoadSummary(total, appended, dups, time.perf_counter() - t0, store.last_seq())
