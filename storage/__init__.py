"""SQLite event store (append-only log) and the projection tables rebuilt from it."""

from .db import SCHEMA_VERSION, SchemaTooNew, connect
from .event_store import AppendResult, EventStore
from .events import EVENT_TYPES, INTERACTION_TYPES, Event, InvalidEvent, StoredEvent, validate_event

__all__ = [
    "SCHEMA_VERSION",
    "SchemaTooNew",
    "connect",
    "AppendResult",
    "EventStore",
    "EVENT_TYPES",
    "INTERACTION_TYPES",
    "Event",
    "InvalidEvent",
    "StoredEvent",
    "validate_event",
]
