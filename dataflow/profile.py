"""The per-user profile fold, as a pure function of the events.

The live flow, the replay and the tests all fold with :func:`fold`; that is what makes
"replay equals live" a property of the code rather than of luck.

The fold is also independent of the order in which a user's events arrive, given their seqs:
sums are kept in integer units (milliseconds, cents) so float rounding cannot depend on order, and
each base attribute keeps the seq that wrote it (last writer by seq wins). A replay that reads
seq ranges in parallel partitions therefore builds the very same profiles as one reading in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

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
    call_ms: int = 0  # call duration, milliseconds
    app_ms: int = 0  # app usage duration, milliseconds
    spend_cents: int = 0
    first_event_at: float | None = None
    last_event_at: float | None = None
    last_seq: int = 0
    base_seq: dict[str, int] = field(default_factory=dict)  # attribute -> seq of the event that set it

    @property
    def call_duration(self) -> float:
        return self.call_ms / 1000

    @property
    def app_duration(self) -> float:
        return self.app_ms / 1000

    @property
    def spend(self) -> float:
        return self.spend_cents / 100

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
            call_ms=round(float(doc.get("call_duration", 0.0)) * 1000),
            app_ms=round(float(doc.get("app_duration", 0.0)) * 1000),
            spend_cents=round(float(doc.get("spend", 0.0)) * 100),
            first_event_at=doc.get("first_event_at"),
            last_event_at=doc.get("last_event_at"),
            last_seq=last_seq,
            # everything in the document is as of last_seq: later events win over it
            base_seq=dict.fromkeys(BASE_DEFAULTS, last_seq),
        )


#: event types that change a profile (others, e.g. labels, rules, ops, are not behaviour)
PROFILE_TYPES: frozenset[str] = INTERACTION_TYPES | {"user.registered", "user.updated"}


def _set_base(state: ProfileState, values: dict[str, Any], seq: int) -> None:
    written = state.base_seq
    for k, v in values.items():
        if k in BASE_DEFAULTS and seq >= written.get(k, 0):
            state.base[k] = v
            written[k] = seq


def fold(state: ProfileState | None, event: Event, seq: int = 0) -> ProfileState:
    """Apply one event of this user to the state (creating a default profile when first seen).

    With seqs given, the result does not depend on the order events are folded in; without them
    (seq 0) attribute updates apply in call order.
    """
    assert event.user_id is not None
    profiles = {event.user_id: state} if state is not None else {}
    fold_many(profiles, (event,), (seq,))
    return profiles[event.user_id]


def fold_many(profiles: dict[str, ProfileState], events: Iterable[Event], seqs: Iterable[int]) -> None:
    """:func:`fold` each event (``seqs[i]`` is the seq of ``events[i]``) into its user's state in
    ``profiles`` (user id -> state), creating states of users first seen. The one fold of the live
    flow, the replay and the tests; one loop over a batch, as it is the flow's innermost one."""
    interactions = INTERACTION_TYPES
    get = profiles.get
    for event, seq in zip(events, seqs):
        uid = event.user_id
        assert uid is not None
        state = get(uid)
        if state is None:
            state = profiles[uid] = ProfileState(uid)
        etype = event.type
        if etype in interactions:
            counts = state.event_counts
            counts[etype] = counts.get(etype, 0) + 1
            state.total_events += 1
            if etype == "call":
                state.partners.add(event.target_id or "")
                state.call_ms += round(float(event.payload.get("duration", 0.0)) * 1000)
            elif etype == "app.usage":
                state.app_ms += round(float(event.payload.get("duration", 0.0)) * 1000)
            elif etype == "product.order":
                state.spend_cents += round(float(event.payload.get("amount", 0.0)) * 100)
            ts = event.ts
            first, last = state.first_event_at, state.last_event_at
            if first is None or ts < first:
                state.first_event_at = ts
            if last is None or ts > last:
                state.last_event_at = ts
        elif etype == "user.registered":
            _set_base(state, event.payload, seq)
            state.registered = True
        elif etype == "user.updated":
            _set_base(state, event.payload, seq)
        if seq > state.last_seq:
            state.last_seq = seq
