"""The validate step: untrusted input batches become typed events plus rejects with their reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from storage.events import Event, InvalidEvent, validate_event

from .sources import IngestBatch


@dataclass(slots=True)
class Checked:
    """One validated input batch: good events in input order, and (raw, reason) for the rest."""

    origin: str
    events: list[Event] = field(default_factory=list)
    rejected: list[tuple[Any, str]] = field(default_factory=list)


def validate_batch(batch: IngestBatch | list[Any]) -> Checked:
    """Validate every item; a bad one is kept with a reason naming the field (and file line)."""
    if isinstance(batch, IngestBatch):
        origin, items, lines = batch.origin, batch.items, batch.lines
    else:  # a plain list, e.g. from bytewax.testing.TestingSource
        origin, items, lines = "input", list(batch), None
    out = Checked(origin)
    good, bad = out.events.append, out.rejected.append
    for k, raw in enumerate(items):
        try:
            good(validate_event(raw))
        except InvalidEvent as err:
            where = f"line {lines[k]}: " if lines is not None else ""
            bad((raw, where + err.reason))
    return out
