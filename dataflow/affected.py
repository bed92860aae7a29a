"""The "affected graph nodes" output of the flow, which the embedding-refresh step consumes.

The stream carries one :class:`GraphDelta` per batch read from the log (in seq order per partition),
so that a flow without a refresh step pays nothing per event. ``delta.nodes()`` lists every graph node
the batch touched: both endpoints of each interaction edge, and each newly registered or listed node
(``new=True``); ``delta.edges()`` lists the interaction edges themselves.

To plug a step in, pass ``attach_refresh`` to :func:`dataflow.flow.build_live_flow`; it receives the
``Stream[GraphDelta]`` (named ``affected_nodes``) and the process's :class:`dataflow.control.FlowControl`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from storage.events import Event

#: interaction type -> node type of its target (the source is always a user)
TARGET_TYPES: dict[str, str] = {
    "call": "user",
    "product.order": "product",
    "product.click": "product",
    "app.usage": "app",
    "app.click": "app",
}
#: events that create a node: event type -> node type (user.registered: the user_id; listings: the target_id)
NEW_NODE_TYPES: dict[str, str] = {"user.registered": "user", "product.listed": "product", "app.listed": "app"}


@dataclass(frozen=True, slots=True)
class AffectedNode:
    node_type: str  # "user" | "product" | "app"
    node_id: str
    seq: int  # seq of the event that touched it
    ts: float  # its event time
    new: bool  # True when the event created the node (registration, listing)


@dataclass(frozen=True, slots=True)
class Edge:
    src_type: str
    src_id: str
    relation: str  # the event type: call, product.order, product.click, app.usage, app.click
    dst_type: str
    dst_id: str
    seq: int
    ts: float


@dataclass(frozen=True, slots=True)
class GraphDelta:
    """One batch of logged events (``seqs[i]`` is the seq of ``events[i]``), seen as graph changes.
    ``upto`` is the highest seq it covers."""

    events: Sequence[Event]
    seqs: Sequence[int]
    upto: int

    def nodes(self) -> list[AffectedNode]:
        out: list[AffectedNode] = []
        for e, seq in zip(self.events, self.seqs):
            t = e.type
            dst = TARGET_TYPES.get(t)
            if dst is not None:
                out.append(AffectedNode("user", e.user_id or "", seq, e.ts, False))
                out.append(AffectedNode(dst, e.target_id or "", seq, e.ts, False))
            elif t in NEW_NODE_TYPES:
                nid = e.user_id if t == "user.registered" else e.target_id
                out.append(AffectedNode(NEW_NODE_TYPES[t], nid or "", seq, e.ts, True))
            elif t == "user.updated":
                out.append(AffectedNode("user", e.user_id or "", seq, e.ts, False))
        return out

    def edges(self) -> list[Edge]:
        return [
            Edge("user", e.user_id or "", e.type, TARGET_TYPES[e.type], e.target_id or "", seq, e.ts)
            for e, seq in zip(self.events, self.seqs)
            if e.type in TARGET_TYPES
        ]
