"""Typed event records: the envelope every event shares, one versioned payload schema per type.

The envelope is a plain slotted dataclass (the generator makes millions of them); validation of
untrusted input goes through one pydantic discriminated union, compiled once, so a malformed event
is refused with a reason naming the field instead of reaching the log.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

# Ids are short printable tokens: they end up in URLs, SQL parameters and logs.
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]


@dataclass(slots=True)
class Event:
    """One fact. ``user_id`` is the subject (None for catalogue and system events)."""

    event_id: str
    type: str
    ts: float
    user_id: str | None = None
    target_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "ts": self.ts,
            "user_id": self.user_id,
            "target_id": self.target_id,
            "payload": self.payload,
            "version": self.version,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"), sort_keys=True)


@dataclass(slots=True)
class StoredEvent(Event):
    """An event as read back from the log, with its global position."""

    seq: int = 0
    recorded_at: float = 0.0


# ---------------------------------------------------------------- payload schemas (version 1)


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UserAttributes(_Payload):
    name: str = Field(max_length=100)
    gender: Literal["M", "F", "U"] = "U"
    age: int = Field(ge=0, le=130)
    city: str = Field(max_length=100)
    plan_type: str = Field(max_length=50)
    level: str = Field(max_length=50)
    device_brand: str = Field(max_length=50)
    monthly_fee: NonNeg
    tenure_months: int = Field(ge=0, le=1200)


class UserUpdated(_Payload):
    """Partial update of the base attributes; at least one field."""

    name: str | None = Field(None, max_length=100)
    city: str | None = Field(None, max_length=100)
    plan_type: str | None = Field(None, max_length=50)
    level: str | None = Field(None, max_length=50)
    device_brand: str | None = Field(None, max_length=50)
    monthly_fee: NonNeg | None = None
    tenure_months: int | None = Field(None, ge=0, le=1200)


class ProductListed(_Payload):
    name: str = Field(max_length=100)
    category: str = Field(max_length=50)
    price: NonNeg


class AppListed(_Payload):
    name: str = Field(max_length=100)
    category: str = Field(max_length=50)


class CallPayload(_Payload):
    duration: NonNeg  # seconds


class OrderPayload(_Payload):
    amount: NonNeg


class EmptyPayload(_Payload):
    pass


class UsagePayload(_Payload):
    duration: NonNeg  # seconds


class LabelPayload(_Payload):
    label: Id
    value: Annotated[int, Field(ge=0, le=1)]


class RulePayload(_Payload):
    name: Id
    description: str = Field("", max_length=500)
    weight: Annotated[float, Field(ge=-1000, le=1000, allow_inf_nan=False)]
    condition: str = Field(min_length=1, max_length=2000)
    enabled: bool = True


class RuleDeletedPayload(_Payload):
    name: Id


class ModelRegisteredPayload(_Payload):
    kind: Id
    version: Annotated[int, Field(ge=1)]
    metrics: dict[str, Any] = Field(default_factory=dict)


class OpsPayload(_Payload):
    model_config = ConfigDict(extra="allow", frozen=True)
    command: Id | None = None


# ---------------------------------------------------------------- envelopes


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: Id
    ts: Finite
    version: Literal[1] = 1


class _UserEvent(_Envelope):
    user_id: Id
    target_id: None = None


class _UserTargetEvent(_Envelope):
    user_id: Id
    target_id: Id


class _CatalogueEvent(_Envelope):
    user_id: None = None
    target_id: Id


class _SystemEvent(_Envelope):
    user_id: None = None
    target_id: Id | None = None


class UserRegisteredEvent(_UserEvent):
    type: Literal["user.registered"]
    payload: UserAttributes


class UserUpdatedEvent(_UserEvent):
    type: Literal["user.updated"]
    payload: UserUpdated


class ProductListedEvent(_CatalogueEvent):
    type: Literal["product.listed"]
    payload: ProductListed


class AppListedEvent(_CatalogueEvent):
    type: Literal["app.listed"]
    payload: AppListed


class CallEvent(_UserTargetEvent):
    type: Literal["call"]
    payload: CallPayload


class ProductOrderEvent(_UserTargetEvent):
    type: Literal["product.order"]
    payload: OrderPayload


class ProductClickEvent(_UserTargetEvent):
    type: Literal["product.click"]
    payload: EmptyPayload = EmptyPayload()


class AppUsageEvent(_UserTargetEvent):
    type: Literal["app.usage"]
    payload: UsagePayload


class AppClickEvent(_UserTargetEvent):
    type: Literal["app.click"]
    payload: EmptyPayload = EmptyPayload()


class LabelObservedEvent(_UserEvent):
    type: Literal["label.observed"]
    payload: LabelPayload


class RuleCreatedEvent(_SystemEvent):
    type: Literal["rule.created"]
    payload: RulePayload


class RuleUpdatedEvent(_SystemEvent):
    type: Literal["rule.updated"]
    payload: RulePayload


class RuleDeletedEvent(_SystemEvent):
    type: Literal["rule.deleted"]
    payload: RuleDeletedPayload


class ModelRegisteredEvent(_SystemEvent):
    type: Literal["model.registered"]
    payload: ModelRegisteredPayload


class OpsEvent(_SystemEvent):
    type: Annotated[str, Field(pattern=r"^ops\.[a-z_.]{1,60}$")]
    payload: OpsPayload = OpsPayload()


_TYPED = (
    UserRegisteredEvent,
    UserUpdatedEvent,
    ProductListedEvent,
    AppListedEvent,
    CallEvent,
    ProductOrderEvent,
    ProductClickEvent,
    AppUsageEvent,
    AppClickEvent,
    LabelObservedEvent,
    RuleCreatedEvent,
    RuleUpdatedEvent,
    RuleDeletedEvent,
    ModelRegisteredEvent,
)

#: type -> schema version; ``ops.*`` events are version 1 too.
EVENT_TYPES: dict[str, int] = {m.model_fields["type"].annotation.__args__[0]: 1 for m in _TYPED}  # type: ignore[union-attr]
#: event types that are behaviour of a user towards a target (edges of the graph)
INTERACTION_TYPES: frozenset[str] = frozenset(
    {"call", "product.order", "product.click", "app.usage", "app.click"}
)

#: What an ingestion source (the mock stream, a JSON-lines file, Kafka) may carry: subscriber and
#: catalogue events. Rules, operations and models enter the log only through the API (behind the admin
#: token when one is set) or the CLI on the same machine; from a source they go to the dead letters.
SOURCE_TYPES: frozenset[str] = frozenset(
    {"user.registered", "user.updated", "product.listed", "app.listed", "label.observed"}
) | INTERACTION_TYPES

#: Largest payload of each event type, as compact JSON bytes; ``ops.*`` share OPS_PAYLOAD_BYTES. The
#: subscriber types' field limits keep them far below theirs; the bound matters for the free-form ones
#: (ops notes, model metrics).
PAYLOAD_BYTES: dict[str, int] = {
    **dict.fromkeys(SOURCE_TYPES, 2048),
    "rule.created": 8192, "rule.updated": 8192, "rule.deleted": 1024,
    "model.registered": 262_144,
}
OPS_PAYLOAD_BYTES = 65_536

_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    m.model_fields["type"].annotation.__args__[0]: TypeAdapter(m) for m in _TYPED  # type: ignore[union-attr]
}
_OPS_ADAPTER: TypeAdapter[OpsEvent] = TypeAdapter(OpsEvent)


class InvalidEvent(ValueError):
    """Raised by :func:`validate_event` with a reason that names the offending field."""

    def __init__(self, reason: str, raw: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


def _reason(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in e["loc"]) or "event"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def validate_event(raw: Mapping[str, Any] | Event | str | bytes) -> Event:
    """Check an untrusted event (dict, JSON text or Event) and return the typed envelope.

    Raises :class:`InvalidEvent` whose ``reason`` says what is wrong.
    """
    if isinstance(raw, Event):
        data: Any = raw.to_dict()
    elif isinstance(raw, (str, bytes)):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:  # its own text gives the column 1-based and the char 0-based
            raise InvalidEvent(f"not JSON: {exc.msg} (at line {exc.lineno}, column {exc.colno})", raw) from None
        except ValueError as exc:  # bytes that are not UTF-8
            raise InvalidEvent(f"not JSON: {exc}", raw) from None
    else:
        data = raw
    if not isinstance(data, Mapping):
        raise InvalidEvent(f"an event must be a JSON object, not {type(data).__name__}", raw)
    etype = data.get("type")
    if not isinstance(etype, str):
        raise InvalidEvent("type: missing or not a string", raw)
    adapter = _ADAPTERS.get(etype)
    if adapter is None:
        if not etype.startswith("ops."):
            raise InvalidEvent(f"type: unknown event type {etype!r}", raw)
        adapter = _OPS_ADAPTER
    try:
        model = adapter.validate_python(data)
    except ValidationError as err:
        raise InvalidEvent(f"{etype}: {_reason(err)}", raw) from None
    payload = model.payload.model_dump(exclude_none=etype == "user.updated")
    if etype == "user.updated" and not payload:
        raise InvalidEvent("user.updated: payload: at least one attribute is required", raw)
    if not math.isfinite(model.ts):  # belt and braces: allow_inf_nan is set on the field
        raise InvalidEvent("ts: must be finite", raw)
    limit = PAYLOAD_BYTES.get(etype, OPS_PAYLOAD_BYTES)
    size = len(json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode())
    if size > limit:
        raise InvalidEvent(f"payload: {size} bytes of JSON, more than {etype} allows ({limit})", raw)
    return Event(
        event_id=model.event_id,
        type=etype,
        ts=float(model.ts),
        user_id=model.user_id,
        target_id=model.target_id,
        payload=payload,
        version=model.version,
    )
