"""Strategy recommendations for hand-built profiles, configurable strategies, and through the service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from scoring_support import SMALL, scoring_db

from dataflow.profile import ProfileState
from scoring.errors import RuleCompileError
from scoring.recommend import Recommender
from scoring.service import ScoringService
from config.settings import Settings

NEUTRAL = {"score": 0.7, "gate": 0.5, "f_rule": 0.0, "f_nn": 0.7}


def profile(**over: Any) -> dict[str, Any]:
    doc = ProfileState("U9").document()
    doc.update({"plan_type": "5G畅享套餐", "monthly_fee": 128.0, "tenure_months": 20, "registered": True,
                "event_counts": {"product.order": 1, "call": 3}, "total_events": 4})
    doc.update(over)
    return doc


def recommended(rec: Recommender, doc: dict[str, Any], scores: dict[str, Any]) -> list[Any]:
    """The recommendations (strategies that failed are left out)."""
    return list(rec.evaluate(doc, scores)[0])


def names(recs: list[dict[str, Any]]) -> list[str]:
    return [r["strategy"] for r in recs]


def test_seed_strategies_for_hand_built_profiles() -> None:
    rec = Recommender()
    assert recommended(rec, profile(), NEUTRAL) == []  # a mid-fee 5G user who orders: nothing to push

    cheap = recommended(rec, profile(monthly_fee=29.0, plan_type="校园套餐"), NEUTRAL)
    assert names(cheap) == ["plan_upgrade"]
    assert cheap[0]["title"] == "Plan upgrade" and "29 CNY" in cheap[0]["reason"] and "校园套餐" in cheap[0]["reason"]

    apps = recommended(rec, profile(event_counts={"app.usage": 9, "app.click": 5, "product.order": 2}), NEUTRAL)
    assert names(apps) == ["data_pack"] and apps[0]["reason"].startswith("14 app sessions")

    never = recommended(rec, profile(event_counts={"call": 2}), NEUTRAL)
    assert names(never) == ["first_order_offer"]

    # several at once, ranked by priority: retention (low fused score) first
    many = recommended(rec,
        profile(monthly_fee=38.0, plan_type="4G基础套餐", tenure_months=70,
                event_counts={"app.usage": 12, "call": 20}, call_partners=7),
        {**NEUTRAL, "score": 0.31},
    )
    assert names(many) == ["retention_offer", "plan_upgrade", "data_pack", "first_order_offer", "five_g_upgrade",
                           "voice_pack", "loyalty_reward"]
    assert [r["priority"] for r in many] == sorted((r["priority"] for r in many), reverse=True)
    assert "0.31" in many[0]["reason"] and "20 calls with 7 partners" in many[5]["reason"]
    assert all(set(r) == {"strategy", "title", "reason", "priority"} for r in many)


def test_strategies_are_configurable_and_checked() -> None:
    custom = Recommender([
        {"name": "vip_care", "title": "VIP care", "condition": "monthly_fee >= 200", "priority": 2,
         "reason": "fee {monthly_fee} on {plan_type}"},
        {"name": "welcome", "title": "Welcome", "condition": "tenure_months < 3", "reason": "new here"},
    ])
    recs = recommended(custom, profile(monthly_fee=250.5, tenure_months=1), NEUTRAL)
    assert recs == [
        {"strategy": "vip_care", "title": "VIP care", "reason": "fee 250.5 on 5G畅享套餐", "priority": 2.0},
        {"strategy": "welcome", "title": "Welcome", "reason": "new here", "priority": 0.5},
    ]
    for bad, reason in [
        ({"name": "x", "title": "X", "condition": "__import__('os')", "reason": "r"}, "strategy x: call to __import__"),
        ({"name": "x", "title": "X", "condition": "True", "reason": "{plan_type.__class__}"}, "strategy x: attribute"),
        ({"name": "x", "title": "X", "condition": "True"}, "strategy x: reason: Field required"),
        ({"name": "x", "title": "X", "condition": "nosuch > 1", "reason": "r"}, "unknown field 'nosuch'"),
    ]:
        with pytest.raises(RuleCompileError) as info:
            Recommender([bad])
        assert reason in info.value.reason, info.value.reason
    with pytest.raises(RuleCompileError, match="defined twice"):
        Recommender([{"name": "a", "title": "A", "condition": "True", "reason": "r"}] * 2)


def test_a_failing_strategy_is_reported_and_does_not_hide_others() -> None:
    rec = Recommender([
        {"name": "orders", "title": "O", "condition": "event_counts['product.order'] > 5", "reason": "r"},
        {"name": "always", "title": "A", "condition": "True", "reason": "ok"},
    ])
    recs, failed = rec.evaluate(profile(event_counts={}), NEUTRAL)
    assert names(recs) == ["always"]
    assert failed == [{"strategy": "orders", "error": "KeyError: 'product.order'"}]


def test_service_recommendations_use_the_stored_profile_and_settings(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    db = scoring_db(tmp_path_factory.getbasetemp(), tmp_path / "r.db", SMALL, embeddings=False)
    with ScoringService(Settings(db=db)) as svc:
        docs = svc.store.profiles.get_many(svc.store.profiles.ids(limit=40))
        for uid, doc in docs.items():
            s = svc.score(uid)
            expected = recommended(Recommender(), doc, {k: s[k] for k in ("score", "gate", "f_rule", "f_nn")})
            assert svc.recommendations(uid) == expected
        assert any(svc.recommendations(uid) for uid in docs)
    only = [{"name": "everyone", "title": "Hello", "condition": "registered", "reason": "hi {user_id}"}]
    with ScoringService(Settings(db=db, recommendation_strategies=only)) as svc:
        uid = next(iter(docs))
        assert svc.recommendations(uid) == [{"strategy": "everyone", "title": "Hello", "reason": f"hi {uid}",
                                             "priority": 0.5}]
