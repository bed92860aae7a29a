"""The profile fold does not depend on the order a user's events arrive in (given their seqs), which is
what lets a replay read seq ranges in parallel partitions and still build the same profiles."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dataflow.profile import ProfileState, fold
from storage.events import Event

_TYPES = ["call", "app.usage", "product.order", "product.click", "app.click", "user.updated", "user.registered"]


@st.composite
def user_events(draw: st.DrawFn) -> list[tuple[Event, int]]:
    n = draw(st.integers(1, 30))
    out = []
    for seq in range(1, n + 1):
        t = draw(st.sampled_from(_TYPES))
        ts = draw(st.floats(0, 1e9, allow_nan=False))
        if t == "user.registered":
            payload = {"plan_type": draw(st.sampled_from(["A", "B"])), "monthly_fee": draw(st.floats(0, 999))}
            out.append((Event(f"e{seq}", t, ts, "U1", None, payload), seq))
        elif t == "user.updated":
            payload = {draw(st.sampled_from(["plan_type", "level", "city"])): draw(st.text(max_size=5))}
            out.append((Event(f"e{seq}", t, ts, "U1", None, payload), seq))
        else:
            value = draw(st.floats(0, 1e5, allow_nan=False, allow_infinity=False))
            key = {"call": "duration", "app.usage": "duration", "product.order": "amount"}.get(t)
            target = draw(st.sampled_from(["U2", "U3", "A1", "P1"]))
            out.append((Event(f"e{seq}", t, ts, "U1", target, {key: value} if key else {}), seq))
    return out


def _fold_all(events: list[tuple[Event, int]]) -> ProfileState:
    state = None
    for e, seq in events:
        state = fold(state, e, seq)
    assert state is not None
    return state


@settings(max_examples=150, deadline=None)
@given(user_events(), st.randoms(use_true_random=False))
def test_any_order_gives_the_same_profile(events: list[tuple[Event, int]], rnd) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(events)
    rnd.shuffle(shuffled)
    a, b = _fold_all(events), _fold_all(shuffled)
    assert a.document() == b.document() and a.last_seq == b.last_seq == len(events)


def test_later_seq_wins_for_attributes_even_when_it_arrives_first() -> None:
    reg = Event("r", "user.registered", 1.0, "U1", None, {"plan_type": "old", "monthly_fee": 10.0})
    upd = Event("u", "user.updated", 2.0, "U1", None, {"plan_type": "new"})
    doc = fold(fold(None, upd, 7), reg, 3).document()
    assert doc["plan_type"] == "new" and doc["monthly_fee"] == 10.0 and doc["registered"] is True
