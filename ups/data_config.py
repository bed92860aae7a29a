"""The mock generator's settings recorded with a dataset: ``ops.data_config`` events in its log.

``ups init`` records the settings a dataset was generated with; ``POST /api/v1/data/config`` records
changes. ``ups up`` runs the dataflow with the newest record, so the live stream continues the very
population the log holds even when the environment says otherwise.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from typing import Any

from storage.events import Event
from ups.settings import EDGE_RANGE_FIELDS

CONFIG_EVENT = "ops.data_config"

#: Settings fields that make up the generator's configuration (dataset and live stream)
FIELDS = (
    "users", "products", "apps", "events_per_user", "history_days", "community_size", "label_share",
    "new_user_share", "seed", "locale", "live_rate", "live_delay",
    *EDGE_RANGE_FIELDS,  # {"min", "max"} each
)


def latest(conn: sqlite3.Connection) -> tuple[dict[str, Any], int] | None:
    """The newest recorded configuration and its seq, or None."""
    row = conn.execute(
        "SELECT payload, seq FROM events WHERE type = ? ORDER BY seq DESC LIMIT 1", (CONFIG_EVENT,)
    ).fetchone()
    if row is None:
        return None
    config = json.loads(row[0]).get("config")
    return (config, int(row[1])) if isinstance(config, dict) else None


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
