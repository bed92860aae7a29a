from __future__ import annotations

import pytest

from storage.events import EVENT_TYPES, InvalidEvent, validate_event

USER = {"name": "李娜", "gender": "F", "age": 30, "city": "上海", "plan_type": "5G畅享套餐", "level": "金卡",
        "device_brand": "华为", "monthly_fee": 128.0, "tenure_months": 40}

VALID = [
    {"type": "user.registered", "user_id": "U1", "payload": USER},
    {"type": "user.updated", "user_id": "U1", "payload": {"monthly_fee": 99}},
    {"type": "product.listed", "target_id": "P1", "payload": {"name": "流量包", "category": "流量", "price": 30}},
    {"type": "app.listed", "target_id": "A1", "payload": {"name": "微信", "category": "社交"}},
    {"type": "call", "user_id": "U1", "target_id": "U2", "payload": {"duration": 60}},
    {"type": "product.order", "user_id": "U1", "target_id": "P1", "payload": {"amount": 30}},
    {"type": "product.click", "user_id": "U1", "target_id": "P1", "payload": {}},
    {"type": "app.usage", "user_id": "U1", "target_id": "A1", "payload": {"duration": 600}},
    {"type": "app.click", "user_id": "U1", "target_id": "A1"},
    {"type": "label.observed", "user_id": "U1", "payload": {"label": "churn", "value": 1}},
    {"type": "rule.created", "payload": {"name": "r1", "weight": 1, "condition": "tenure_months > 1"}},
    {"type": "rule.updated", "payload": {"name": "r1", "weight": 2, "condition": "tenure_months > 1"}},
    {"type": "rule.deleted", "payload": {"name": "r1"}},
    {"type": "model.registered", "payload": {"kind": "hgt", "version": 1}},
    {"type": "ops.ingestion.stop", "payload": {"command": "ingestion.stop"}},
]


def test_every_type_has_a_valid_example() -> None:
    covered = {v["type"] for v in VALID}
    assert set(EVENT_TYPES) <= covered


@pytest.mark.parametrize("body", VALID, ids=lambda b: b["type"])
def test_valid_events_pass(body: dict) -> None:
    e = validate_event({"event_id": "e1", "ts": 1.0, **body})
    assert e.type == body["type"] and e.event_id == "e1" and e.version == 1


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({"event_id": "e", "ts": 1}, "type: missing"),
        ({"type": "teleport", "event_id": "e", "ts": 1}, "unknown event type 'teleport'"),
        ({"type": "call", "event_id": "e", "ts": 1, "user_id": "U1", "payload": {"duration": 5}}, "target_id: Field required"),
        ({"type": "call", "event_id": "e", "ts": 1, "user_id": "U1", "target_id": "U2", "payload": {"duration": -5}},
         "payload.duration: Input should be greater than or equal to 0"),
        ({"type": "call", "event_id": "e", "ts": "soon", "user_id": "U1", "target_id": "U2", "payload": {"duration": 5}},
         "ts:"),
        ({"type": "call", "event_id": "e", "ts": float("inf"), "user_id": "U1", "target_id": "U2",
          "payload": {"duration": 5}}, "ts:"),
        ({"type": "app.click", "event_id": "bad id!", "ts": 1, "user_id": "U1", "target_id": "A1"}, "event_id:"),
        ({"type": "user.updated", "event_id": "e", "ts": 1, "user_id": "U1", "payload": {}}, "at least one attribute"),
        ({"type": "label.observed", "event_id": "e", "ts": 1, "user_id": "U1", "payload": {"label": "churn", "value": 3}},
         "payload.value"),
        ({"type": "app.click", "event_id": "e", "ts": 1, "user_id": "U1", "target_id": "A1", "extra": 1}, "extra:"),
    ],
)
def test_invalid_events_name_the_problem(raw: object, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_event(raw)  # type: ignore[arg-type]
    assert reason in info.value.reason
    assert info.value.raw is raw


def test_a_json_error_gives_its_position_as_a_1_based_line_and_column() -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_event('{"type": "call",\n "ts": }')
    assert info.value.reason.endswith("(at line 2, column 8)"), info.value.reason
    assert "char" not in info.value.reason  # Python's own text adds a 0-based offset beside the column
