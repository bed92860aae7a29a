"""The mock generator's settings recorded with a dataset: ``ops.data_config`` events in its log.

``ups init`` records the settings a dataset was generated with; ``POST /api/v1/data/config`` records
changes. ``ups up`` runs the dataflow with the configuration in effect (``in_effect``): the dataset's
fields from the record written when the dataset was generated — a later change to sizes or ranges waits
for a regenerate — and the live rate/delay from the newest record, so the live stream continues the very
population the log holds even when the environment says otherwise.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from config.generator import GENERATOR_FIELDS

from .events import Event

if TYPE_CHECKING:
    from .interface import EventLog

CONFIG_EVENT = "ops.data_config"

#: Settings fields that make up the generator's configuration (dataset and live stream)
FIELDS = GENERATOR_FIELDS

#: Fields the running flow applies at once; every other field shapes a dataset and waits for a regenerate
LIVE_FIELDS = ("live_rate", "live_delay")


def _record(store: EventLog, newest: bool) -> tuple[dict[str, Any], int] | None:
    ev = store.last_of_type(CONFIG_EVENT) if newest else store.first_of_type(CONFIG_EVENT)
    if ev is None:
        return None
    config = ev.payload.get("config")
    return (config, ev.seq) if isinstance(config, dict) else None


def latest(store: EventLog) -> tuple[dict[str, Any], int] | None:
    """The newest recorded configuration (what the next regenerate uses) and its seq, or None."""
    return _record(store, newest=True)


def in_effect(store: EventLog) -> dict[str, Any] | None:
    """The configuration the log's dataset was generated with (its first record), with the live fields
    of the newest record; None when nothing is recorded."""
    first, newest = _record(store, newest=False), _record(store, newest=True)
    if first is None or newest is None:
        return None
    return {**first[0], **{k: newest[0][k] for k in LIVE_FIELDS if k in newest[0]}}


def event(config: dict[str, Any]) -> Event:
    return Event(event_id=f"ops-data-config-{uuid.uuid4().hex}", type=CONFIG_EVENT, ts=time.time(),
                 payload={"command": "data.config", "config": config})


def of_settings(settings: Any) -> dict[str, Any]:
    """The configuration part of the settings, as plain JSON values (ranges as {"min", "max"})."""
    return json.loads(settings.model_dump_json(include=set(FIELDS)))


def as_env(config: dict[str, Any]) -> dict[str, str]:
    """``UPS_*`` variables a child process reads the configuration from (ranges as JSON objects)."""
    return {
        f"UPS_{k.upper()}": json.dumps(v) if isinstance(v, dict) else str(v)
        for k, v in config.items() if k in FIELDS
    }
