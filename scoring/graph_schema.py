"""The graph's shape: node types, the interaction event -> edge type mapping, reverse edges, names."""

from __future__ import annotations


NODE_TYPES: tuple[str, ...] = ("user", "product", "app")
EdgeType = tuple[str, str, str]

#: interaction event type -> forward edge type (user -> target)
RELATIONS: dict[str, EdgeType] = {
    "call": ("user", "calls", "user"),
    "product.order": ("user", "orders", "product"),
    "product.click": ("user", "clicks", "product"),
    "app.usage": ("user", "uses", "app"),
    "app.click": ("user", "clicks", "app"),
}
FORWARD_EDGE_TYPES: tuple[EdgeType, ...] = tuple(RELATIONS.values())


def reverse_of(et: EdgeType) -> EdgeType:
    return (et[2], f"rev_{et[1]}", et[0])


EDGE_TYPES: tuple[EdgeType, ...] = FORWARD_EDGE_TYPES + tuple(reverse_of(et) for et in FORWARD_EDGE_TYPES)
#: edge type -> (the forward type whose list holds its edges, whether it runs against that list)
FORWARD_OF: dict[EdgeType, tuple[EdgeType, bool]] = {
    **{et: (et, False) for et in FORWARD_EDGE_TYPES},
    **{reverse_of(et): (et, True) for et in FORWARD_EDGE_TYPES},
}
METADATA: tuple[list[str], list[EdgeType]] = (list(NODE_TYPES), list(EDGE_TYPES))

#: events that define or change a node's attributes: type -> node type
ATTRIBUTE_EVENTS: dict[str, str] = {
    "user.registered": "user",
    "user.updated": "user",
    "product.listed": "product",
    "app.listed": "app",
}
GRAPH_EVENT_TYPES: tuple[str, ...] = tuple(ATTRIBUTE_EVENTS) + tuple(RELATIONS)


def edge_key(et: EdgeType) -> str:
    """``user-calls-user``: the name used in metrics and JSON."""
    return "-".join(et)
