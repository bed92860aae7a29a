"""The event store (append-only log) and the projection tables rebuilt from it; SQLite implementation."""

from pathlib import Path

from .db import SCHEMA_VERSION, DatabaseError, SchemaTooNew, connect
from .event_store import AppendResult, EventStore
from .events import EVENT_TYPES, INTERACTION_TYPES, Event, InvalidEvent, StoredEvent, validate_event



def open_store(path: str | Path, *, readonly: bool = False) -> EventStore:
    """Open (creating and migrating when missing, unless ``readonly``) the store at ``path``."""
    return EventStore(path, readonly=readonly)


__all__ = [
    "open_store",
    "DatabaseError",
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
