"""The per-user profile fold (the seed's ingestion cache), as a pure function of the events.

The live flow, the replay and the tests all fold with :func:`fold`; that is what makes
"replay equals live" a property of the code rather than of luck.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from storage.events import INTERACTION_TYPES, Event

#: base attributes, and the defaults a user first seen through an interaction gets
BASE_DEFAULTS: dict[str, Any] = {
    "name": "",
    "gender": "U",
    "age": 0,
    "city": "",
    "plan_type": "unknown",
    "level": "unknown",
    "device_brand": "unknown",
    "monthly_fee": 0.0,
    "tenure_months": 0,
}


@dataclass(slots=True)
class ProfileState:
    user_id: str
    base: dict[str, Any] = field(default_factory=lambda: dict(BASE_DEFAULTS))
    registered: bool = False
    event_counts: dict[str, int] = field(default_factory=dict)
    partners: set[str] = field(default_factory=set)
    total_events: int = 0
    call_duration: float = 0.0
    app_duration: float = 0.0
    spend: float = 0.0
    first_event_at: float | None = None
    last_event_at: float | None = None
    last_seq: int = 0

    def document(self) -> dict[str, Any]:
        """The profile as stored in the ``profiles`` projection and served by the API."""
        return {
            "user_id": self.user_id,
            **self.base,
            "registered": self.registered,
            "event_counts": dict(sorted(self.event_counts.items())),
            "call_partners": len(self.partners),
            "call_partner_ids": sorted(self.partners),
            "total_events": self.total_events,
            "call_duration": round(self.call_duration, 3),
            "app_duration": round(self.app_duration, 3),
            "spend": round(self.spend, 2),
            "first_event_at": self.first_event_at,
            "last_event_at": self.last_event_at,
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any], last_seq: int = 0) -> "ProfileState":
        """Resume folding from a stored profile (replay from a seq into an existing database)."""
        return cls(
            user_id=doc["user_id"],
            base={k: doc.get(k, v) for k, v in BASE_DEFAULTS.items()},
            registered=bool(doc.get("registered")),
            event_counts=dict(doc.get("event_counts", {})),
            partners=set(doc.get("call_partner_ids", [])),
            total_events=int(doc.get("total_events", 0)),
            call_duration=float(doc.get("call_duration", 0.0)),
            app_duration=float(doc.get("app_duration", 0.0)),
            spend=float(doc.get("spend", 0.0)),
            first_event_at=doc.get("first_event_at"),
            last_event_at=doc.get("last_event_at"),
            last_seq=last_seq,
        )


#: event types that change a profile (others, e.g. labels, rules, ops, are not behaviour)
PROFILE_TYPES: frozenset[str] = INTERACTION_TYPES | {"user.registered", "user.updated"}


def fold(state: ProfileState | None, event: Event, seq: int = 0) -> ProfileState:
    """Apply one event of this user to the state (creating a default profile when first seen)."""
    assert event.user_id is not None
    if state is None:
        state = ProfileState(event.user_id)
    etype = event.type
    if etype == "user.registered":
        state.base.update({k: event.payload[k] for k in BASE_DEFAULTS if k in event.payload})
        state.registered = True
    elif etype == "user.updated":
        state.base.update({k: v for k, v in event.payload.items() if k in BASE_DEFAULTS})
    elif etype in INTERACTION_TYPES:
        state.event_counts[etype] = state.event_counts.get(etype, 0) + 1
        state.total_events += 1
        if etype == "call":
            state.partners.add(event.target_id or "")
            state.call_duration += float(event.payload.get("duration", 0.0))
        elif etype == "app.usage":
            state.app_duration += float(event.payload.get("duration", 0.0))
        elif etype == "product.order":
            state.spend += float(event.payload.get("amount", 0.0))
        if state.first_event_at is None or event.ts < state.first_event_at:
            state.first_event_at = event.ts
        if state.last_event_at is None or event.ts > state.last_event_at:
            state.last_event_at = event.ts
    if seq > state.last_seq:
        state.last_seq = seq
    return state
