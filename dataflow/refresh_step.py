"""The embedding-refresh branch of the live flow: scoring's incremental refresher on the
``affected_nodes`` stream, its embeddings upserted by a sink, its status merged into the flow's."""

from __future__ import annotations

from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream

from scoring.refresh import STATUS_KEYS, EmbeddingSink, refresh_builder
from config.settings import Settings

from .affected import GraphDelta
from .control import FlowControl
from .flow import AttachRefresh


def embedding_refresh(settings: Settings) -> AttachRefresh:
    """An ``attach_refresh`` for :func:`dataflow.flow.build_live_flow`."""

    def attach(affected: Stream[GraphDelta], control: FlowControl) -> None:
        # one refresher holds the whole live graph: every delta goes to the same key
        keyed = op.key_on("refresh_key", affected, lambda _: "graph")

        def report(st: dict[str, Any]) -> None:
            control.set_refresh_status(**{k: st[k] for k in STATUS_KEYS if k in st})

        out = op.stateful(
            "embedding_refresh",
            keyed,
            refresh_builder(settings, paused=lambda: control.refresh_paused, on_status=report),
        )
        op.output("embedding_sink", out, EmbeddingSink(settings.db))

    return attach


def refresh_branch(settings: Settings) -> AttachRefresh | None:
    """The refresh branch a live flow gets: ``ups dataflow`` and ``dataflow.flow:get_flow`` alike."""
    return embedding_refresh(settings) if settings.refresh_in_flow else None
