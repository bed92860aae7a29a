"""Export the base tables (users, products, apps) and the events of the log as Parquet or CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .interface import EventLog

Format = Literal["parquet", "csv"]
_BASE = {"user.registered": "users", "product.listed": "products", "app.listed": "apps"}
_EVENT_COLUMNS = ["seq", "event_id", "type", "user_id", "target_id", "ts", "duration", "amount", "payload"]
_ID = {"users": "user_id", "products": "product_id", "apps": "app_id"}


def _base_rows(store: EventLog) -> dict[str, list[dict[str, Any]]]:
    """Base tables as they stand now: registrations, with later ``user.updated`` applied."""
    tables: dict[str, dict[str, dict[str, Any]]] = {"users": {}, "products": {}, "apps": {}}
    for ev in store.read(types=[*_BASE, "user.updated"]):
        if ev.type == "user.updated":
            row = tables["users"].get(ev.user_id or "")
            if row is not None:
                row.update(ev.payload)
            continue
        name = _BASE[ev.type]
        key = ev.user_id if name == "users" else ev.target_id
        tables[name][key or ""] = {_ID[name]: key, **ev.payload}
    return {k: list(v.values()) for k, v in tables.items()}


def _event_frames(store: EventLog, chunk: int = 200_000) -> Iterator[pd.DataFrame]:
    for batch in store.export_rows(chunk):
        frame = pd.DataFrame(batch, columns=_EVENT_COLUMNS)
        frame["duration"] = frame["duration"].astype("float64")
        frame["amount"] = frame["amount"].astype("float64")
        yield frame


def export(store: EventLog, out: Path, fmt: Format, on_progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Write users/products/apps/events files into ``out``; returns row counts per table."""
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for name, rows in _base_rows(store).items():
        frame = pd.DataFrame(rows)
        path = out / f"{name}.{fmt}"
        if fmt == "parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        counts[name] = len(frame)
        if on_progress:
            on_progress(name, len(frame))
    path = out / f"events.{fmt}"
    path.unlink(missing_ok=True)
    writer: pq.ParquetWriter | None = None
    n = 0
    try:
        for frame in _event_frames(store):
            if fmt == "parquet":
                table = pa.Table.from_pandas(frame, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
            else:
                frame.to_csv(path, index=False, mode="a", header=n == 0)
            n += len(frame)
            if on_progress:
                on_progress("events", len(frame))
    finally:
        if writer is not None:
            writer.close()
    if n == 0:
        empty = pd.DataFrame(columns=_EVENT_COLUMNS)
        empty.to_parquet(path, index=False) if fmt == "parquet" else empty.to_csv(path, index=False)
    counts["events"] = n
    return counts
