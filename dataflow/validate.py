"""The validate step: untrusted input batches become typed events plus rejects with their reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from pydantic import BaseModel, TypeAdapter, ValidationError

from storage import events as ev
from storage.events import Event, InvalidEvent, validate_event

from .sources import IngestBatch

# The compiled per-type schemas of storage.events, used directly for the high-volume types: reading
# attributes off an Event (or keys off a dict) and keeping the validated payload's fields is half the
# cost of validate_event's round trip through to_dict/model_dump. Anything else, and every failure
# (for its reason), goes through validate_event itself, so both paths accept exactly the same events.
_FAST_MODELS: tuple[type[BaseModel], ...] = (
    ev.CallEvent,
    ev.ProductOrderEvent,
    ev.ProductClickEvent,
    ev.AppUsageEvent,
    ev.AppClickEvent,
    ev.UserRegisteredEvent,
    ev.LabelObservedEvent,
    ev.ProductListedEvent,
    ev.AppListedEvent,
)
_FAST: dict[str, TypeAdapter[Any]] = {
    m.model_fields["type"].annotation.__args__[0]: TypeAdapter(m) for m in _FAST_MODELS  # type: ignore[union-attr]
}


def check_event(raw: Any) -> Event:
    """:func:`storage.validate_event`, faster for the common event types; raises ``InvalidEvent``."""
    if isinstance(raw, Event):
        etype: Any = raw.type
        attrs = True
    elif isinstance(raw, Mapping):
        etype = raw.get("type")
        attrs = False
    else:
        return validate_event(raw)
    adapter = _FAST.get(etype) if isinstance(etype, str) else None
    if adapter is None:
        return validate_event(raw)
    try:
        m = adapter.validate_python(raw, from_attributes=attrs)
    except ValidationError:
        return validate_event(raw)  # raises InvalidEvent with the standard reason
    # the payload model is dropped here, so its field dict can become the event's payload as is
    return Event(m.event_id, etype, float(m.ts), m.user_id, m.target_id, m.payload.__dict__, m.version)


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
            good(check_event(raw))
        except InvalidEvent as err:
            where = f"line {lines[k]}: " if lines is not None else ""
            bad((raw, where + err.reason))
    return out
