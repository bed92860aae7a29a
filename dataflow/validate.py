"""The validate step: untrusted input batches become typed events plus rejects with their reason."""

from __future__ import annotations

from itertools import starmap
from operator import itemgetter
from typing import Annotated, Any, Mapping, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import SchemaValidator, from_json
from typing_extensions import TypedDict

from storage import events as ev
from storage.events import SOURCE_TYPES, Event, InvalidEvent, validate_event

from .sources import IngestBatch

# The high-volume types are checked against the schemas of storage.events turned into TypedDicts: the
# same field types and constraints, validated into plain dicts, which costs a third of building the
# models. Every field is required here (a missing one falls back), and anything this path does not
# accept goes through validate_event itself, for its result or its reason, so both paths accept
# exactly the same events and build the same Event (test_flow checks it).
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


def _typed_dict(model: type[BaseModel]) -> Any:
    """A TypedDict with ``model``'s fields (nested models too), constraints and ``extra`` setting."""
    fields: dict[str, Any] = {}
    for name, f in model.model_fields.items():
        ann: Any = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            ann = _typed_dict(ann)
        fields[name] = Annotated[(ann, *f.metadata)] if f.metadata else ann
    make_typed_dict: Any = TypedDict  # built from a model at run time, which static checkers cannot follow
    td = make_typed_dict(f"{model.__name__}Dict", fields)
    td.__pydantic_config__ = ConfigDict(extra=model.model_config.get("extra"))
    return td


_DICTS = {m.model_fields["type"].annotation.__args__[0]: _typed_dict(m) for m in _FAST_MODELS}  # type: ignore[union-attr]
_ONE: dict[str, SchemaValidator] = {t: TypeAdapter(td).validator for t, td in _DICTS.items()}  # type: ignore[misc]
#: a whole batch in one call: a list of the fast types, told apart by ``type``
_MANY: SchemaValidator = TypeAdapter(  # type: ignore[assignment]
    list[Annotated[Union[tuple(_DICTS.values())], Field(discriminator="type")]]  # type: ignore[misc, arg-type]
).validator


def _as_dict(raw: Any) -> Any:
    """The item as a mapping to validate (an Event's fields, a parsed JSON line), else the item itself."""
    if isinstance(raw, Event):
        return raw.to_dict()
    if isinstance(raw, (str, bytes)):
        try:
            return from_json(raw)
        except ValueError:
            return raw  # validate_event gives the reason
    return raw


_event_fields = itemgetter("event_id", "type", "ts", "user_id", "target_id", "payload", "version")


def _event(d: dict[str, Any]) -> Event:
    return Event(*_event_fields(d))


def _events(ds: list[dict[str, Any]]) -> list[Event]:
    return list(starmap(Event, map(_event_fields, ds)))  # the loop in C


def check_event(raw: Any) -> Event:
    """:func:`storage.validate_event`, faster for the common event types; raises ``InvalidEvent``."""
    d = _as_dict(raw)
    if isinstance(d, Mapping):
        etype = d.get("type")
        validator = _ONE.get(etype) if isinstance(etype, str) else None
        if validator is not None:
            try:
                return _event(validator.validate_python(d))
            except ValidationError:
                pass
    return validate_event(raw)  # the other types, and the reason of every refusal


def validate_items(items: list[Any], lines: list[int] | None = None, unit: str = "line") -> list[Event | str]:
    """Each item's outcome, in input order: its Event, or the reason it is refused (with its position,
    e.g. "line 7: " or "offset 7: ", when ``lines`` are given). Only :data:`storage.events.SOURCE_TYPES`
    are accepted: this is the check of everything an ingestion source brings."""
    try:
        # the usual batch: only high-volume types, all valid, checked in one call
        return [*_events(_MANY.validate_python([x if type(x) is dict else _as_dict(x) for x in items]))]
    except ValidationError:
        pass
    out: list[Event | str] = []
    for k, raw in enumerate(items):
        try:
            event = check_event(raw)
            if event.type not in SOURCE_TYPES:
                raise InvalidEvent(
                    f"type: {event.type} events may not come from an ingestion source (only subscriber and "
                    "catalogue events); rules, operations and models are changed through the API or the CLI", raw,
                )
            out.append(event)
        except InvalidEvent as err:
            out.append((f"{unit} {lines[k]}: " if lines is not None else "") + err.reason)
    return out


def unpack(batch: IngestBatch | list[Any]) -> tuple[str, list[Any], list[int] | None, str]:
    """(origin, items, positions or None, what the positions count) of an input batch."""
    if isinstance(batch, IngestBatch):
        return batch.origin, batch.items, batch.lines, batch.unit
    return "input", list(batch), None, "line"  # a plain list, e.g. from bytewax.testing.TestingSource
