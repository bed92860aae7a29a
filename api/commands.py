"""Commands to the running dataflow: an ``ops_history`` row it polls and resolves when applied.

The API waits a little for the resolution so the caller gets the resulting state; when no flow runs
the command stays pending and the next flow start applies it (except ``shutdown``, see routes_ops).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import anyio


from .context import AppContext
from .schemas import CommandOut
from .status import dataflow_state

#: the state each command leaves the flow in, reported when the flow resolved it before its status row moved
RESULTING: dict[str, dict[str, str]] = {
    "ingestion.start": {"ingestion": "running"},
    "ingestion.stop": {"ingestion": "paused"},
    "incremental.start": {"refresh": "running"},
    "incremental.stop": {"refresh": "paused"},
    "shutdown": {"state": "stopped"},
}


async def send(ctx: AppContext, command: str, params: dict[str, Any] | None = None,
               wait: float | None = None) -> CommandOut:
    # writes wait for SQLite's write lock: never on the event loop
    op_id = await anyio.to_thread.run_sync(
        lambda: ctx.store().ops.request(command, params or {}, source="api")
    )
    store = ctx.store()
    ops = store.ops
    deadline = time.monotonic() + (ctx.settings.command_ack_timeout if wait is None else wait)
    row = ops.get(op_id)
    while row is not None and row["state"] == "pending" and time.monotonic() < deadline:
        if not dataflow_state(store, ctx.settings.dataflow_stale_after).alive:
            break  # nobody will resolve it now: don't keep the caller waiting
        await anyio.sleep(0.05)
        row = ops.get(op_id)
    assert row is not None
    if row["state"] == "pending":
        alive = dataflow_state(store, ctx.settings.dataflow_stale_after).alive
        msg = (
            "the dataflow has not applied it yet"
            if alive
            else "no dataflow is running; the command applies when it starts"
        )
        return CommandOut(command=command, id=op_id, state="pending", message=msg)
    state: Literal["applied", "rejected", "expired"] = row["state"] if row["state"] in ("rejected", "expired") else "applied"
    return CommandOut(
        command=command,
        id=op_id,
        state=state,
        effect=row.get("effect"),
        resulting=RESULTING.get(command, {}) if state == "applied" else {},
    )
