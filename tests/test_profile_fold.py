from __future__ import annotations

from dataflow.profile import ProfileState, fold
from storage.events import Event


def test_fold_hand_written_sequence() -> None:
    evs = [
        Event("1", "call", 10.0, "U1", "U2", {"duration": 60.0}),  # before registration: default profile
        Event("2", "user.registered", 5.0, "U1", None, {"name": "王芳", "monthly_fee": 58.0, "tenure_months": 13,
                                                        "plan_type": "4G畅享套餐"}),
        Event("3", "call", 20.0, "U1", "U3", {"duration": 30.0}),
        Event("4", "call", 30.0, "U1", "U2", {"duration": 10.0}),
        Event("5", "app.usage", 40.0, "U1", "A1", {"duration": 100.0}),
        Event("6", "product.order", 15.0, "U1", "P1", {"amount": 25.5}),
        Event("7", "user.updated", 50.0, "U1", None, {"monthly_fee": 99.0}),
        Event("8", "label.observed", 60.0, "U1", None, {"label": "churn", "value": 1}),
    ]
    st = None
    for i, e in enumerate(evs, 1):
        st = fold(st, e, seq=i)
    doc = st.document()
    assert doc["event_counts"] == {"app.usage": 1, "call": 3, "product.order": 1}
    assert doc["total_events"] == 5 and doc["call_partners"] == 2
    assert doc["call_duration"] == 100.0 and doc["app_duration"] == 100.0 and doc["spend"] == 25.5
    assert doc["monthly_fee"] == 99.0 and doc["tenure_months"] == 13 and doc["plan_type"] == "4G畅享套餐"
    assert doc["registered"] and doc["first_event_at"] == 10.0 and doc["last_event_at"] == 40.0
    assert st.last_seq == 8
    # resuming from the stored document continues exactly where it stopped
    again = fold(ProfileState.from_document(doc, 8), Event("9", "call", 70.0, "U1", "U4", {"duration": 1.0}), 9)
    direct = fold(st, Event("9", "call", 70.0, "U1", "U4", {"duration": 1.0}), 9)
    assert again.document() == direct.document()


def test_unknown_user_gets_a_default_profile() -> None:
    st = fold(None, Event("1", "app.click", 1.0, "NEW", "A1", {}))
    doc = st.document()
    assert doc["registered"] is False and doc["plan_type"] == "unknown" and doc["total_events"] == 1
