"""Rule engine output, and rules as events: CRUD that survives a reopen and a replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from scoring_support import SMALL, scoring_db

from dataflow.profile import ProfileState
from scoring.errors import RuleCompileError, RuleExists, RuleNotFound
from scoring.rule_store import RuleStore
from scoring.rules import DEFAULT_RULES, PROFILE_FIELDS, Rule, RuleEngine
from scoring.service import ScoringService
from storage.event_store import EventStore
from storage.projections import Rules
from config.settings import Settings


def profile(**over: Any) -> dict[str, Any]:
    doc = ProfileState("U1").document()
    doc.update({"plan_type": "4G基础套餐", "monthly_fee": 58.0, "tenure_months": 6, "registered": True})
    doc.update(over)
    return doc


def fired(out: Any) -> set[str]:
    return {d.name for d in out.details if d.fired}


def test_profile_fields_are_the_profile_documents_fields() -> None:
    assert PROFILE_FIELDS == set(ProfileState("U1").document())


def test_default_rules_keep_the_seeds_meaning() -> None:
    eng = RuleEngine(DEFAULT_RULES)
    assert eng.names == ("at_risk_churn", "digital_enthusiast", "high_value_user", "loyal_user")  # stable order
    rich = profile(monthly_fee=350.0, tenure_months=40, plan_type="5G尊享套餐", total_events=14,
                   event_counts={"app.usage": 6, "app.click": 4, "call": 4})
    out = eng.evaluate(rich)
    assert fired(out) == {"high_value_user", "loyal_user", "digital_enthusiast"}
    assert out.h_rule.tolist() == [0.0, 1.0, 1.0, 1.0]
    assert out.f_rule == pytest.approx(0.4 + 0.3 + 0.2)
    # the family plan counts as loyal too; a 4G plan does not, nor does a short tenure
    assert "loyal_user" in fired(eng.evaluate(profile(tenure_months=36, plan_type="家庭融合套餐")))
    assert "loyal_user" not in fired(eng.evaluate(profile(tenure_months=80, plan_type="4G畅享套餐")))
    assert "loyal_user" not in fired(eng.evaluate(profile(tenure_months=35, plan_type="5G畅享套餐")))
    # fee > 300 is strict, tenure >= 24 is not
    assert "high_value_user" not in fired(eng.evaluate(profile(monthly_fee=300.0, tenure_months=24)))
    assert "high_value_user" in fired(eng.evaluate(profile(monthly_fee=300.01, tenure_months=24)))
    # digital: app usage + clicks >= 10
    assert "digital_enthusiast" not in fired(eng.evaluate(profile(event_counts={"app.usage": 5, "app.click": 4})))
    quiet = profile(total_events=2, tenure_months=12, monthly_fee=79.0, event_counts={"call": 2})
    out = eng.evaluate(quiet)
    assert fired(out) == {"at_risk_churn"} and out.f_rule == pytest.approx(-0.5)
    assert "at_risk_churn" not in fired(eng.evaluate(profile(total_events=3, tenure_months=12, monthly_fee=50.0)))


def test_a_rule_failing_on_a_user_is_reported_not_dropped() -> None:
    rules = [
        *DEFAULT_RULES,
        Rule("orders_gt_0", "", 1.0, "event_counts['product.order'] > 0"),
        Rule("broken_since", "", 1.0, "plan_type.upper() == 'X'"),  # stored before the sandbox refused it
        Rule("off", "", 5.0, "True", enabled=False),
    ]
    eng = RuleEngine(rules)
    assert "off" not in eng.names
    out = eng.evaluate(profile(event_counts={"call": 1}, total_events=1))
    by_name = {d.name: d for d in out.details}
    assert set(by_name) == set(eng.names)
    assert by_name["orders_gt_0"].fired is False and by_name["orders_gt_0"].error == "KeyError: 'product.order'"
    assert by_name["broken_since"].fired is False
    assert "does not compile" in (by_name["broken_since"].error or "") and ".upper" in (by_name["broken_since"].error or "")
    assert by_name["high_value_user"].error is None
    ok = eng.evaluate(profile(event_counts={"product.order": 2}))
    assert {d.name: d for d in ok.details}["orders_gt_0"].fired is True


@pytest.fixture
def svc_db(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    return scoring_db(tmp_path_factory.getbasetemp(), tmp_path / "rules.db", SMALL, embeddings=False)


def snapshot(svc: ScoringService) -> list[tuple[Any, ...]]:
    return [(r.name, r.description, r.weight, r.condition, r.enabled, r.seq) for r in svc.list_rules()]


def test_rule_crud_persists_across_reopen_and_replay(svc_db: Path, tmp_path: Path) -> None:
    settings = Settings(db=svc_db)
    with ScoringService(settings) as svc:
        assert [r.name for r in svc.list_rules()] == sorted(r.name for r in DEFAULT_RULES)
        v0 = svc.rules_version()
        created = svc.create_rule({"name": "big_spender", "description": "spends", "weight": 0.7,
                                   "condition": "spend > 100"})
        assert created["rules_version"] > v0
        with pytest.raises(RuleExists):
            svc.create_rule({"name": "big_spender", "weight": 1, "condition": "spend > 1"})
        v1 = svc.rules_version()
        assert v1 == created["rules_version"]
        updated = svc.update_rule("big_spender", {"weight": -0.25, "enabled": False})
        assert updated["condition"] == "spend > 100" and updated["weight"] == -0.25 and not updated["enabled"]
        v2 = svc.rules_version()
        svc.delete_rule("at_risk_churn")
        v3 = svc.rules_version()
        assert v0 < v1 < v2 < v3
        with pytest.raises(RuleNotFound):
            svc.delete_rule("at_risk_churn")
        with pytest.raises(RuleNotFound):
            svc.update_rule("nope", {"weight": 1})
        before = snapshot(svc)
        assert "at_risk_churn" not in [r[0] for r in before]
        assert ("big_spender", "spends", -0.25, "spend > 100", False) == before[0][:5]

    # reopen: the same rules at the same version (defaults are not seeded again)
    with ScoringService(settings) as svc:
        assert snapshot(svc) == before and svc.rules_version() == v3

    # replay: only the log, copied into a new file, rebuilds the same projection and version
    replayed = tmp_path / "replayed.db"
    with EventStore(svc_db) as src, EventStore(replayed) as dst:
        dst.append(src.read())
        assert dst.last_seq() == src.last_seq()
        assert Rules(dst.conn).list() == []
    with ScoringService(Settings(db=replayed)) as svc:
        assert snapshot(svc) == before and svc.rules_version() == v3
    # and a full rebuild of the projection from the log gives the same rows
    with EventStore(svc_db) as store:
        rs = RuleStore(store)
        live = [(r.name, r.description, r.weight, r.condition, r.enabled, r.seq) for r in rs.list()]
        assert rs.rebuild() == v3
        assert [(r.name, r.description, r.weight, r.condition, r.enabled, r.seq) for r in rs.list()] == live


def test_bad_rules_are_refused_with_the_reason_and_nothing_is_stored(svc_db: Path) -> None:
    with ScoringService(Settings(db=svc_db)) as svc:
        before, version = snapshot(svc), svc.rules_version()
        cases = [
            ({"name": "x", "weight": 1, "condition": "__import__('os')"}, "condition: call to __import__"),
            ({"name": "x", "weight": 1, "condition": "9**9**9 > 1"}, "too large"),
            ({"name": "x", "weight": 1, "condition": "fee > 1"}, "unknown field 'fee'"),
            ({"name": "x", "weight": 5000, "condition": "True"}, "weight"),
            ({"name": "has space", "weight": 1, "condition": "True"}, "name"),
            ({"name": "x", "condition": "True"}, "weight: Field required"),
            ({"name": "x", "weight": 1, "condition": "True", "colour": "red"}, "colour"),
        ]
        for spec, reason in cases:
            with pytest.raises(RuleCompileError) as info:
                svc.create_rule(spec)
            assert reason in info.value.reason, (spec, info.value.reason)
        with pytest.raises(RuleCompileError, match="renamed"):
            svc.update_rule("loyal_user", {"name": "other"})
        with pytest.raises(RuleCompileError, match="condition"):
            svc.update_rule("loyal_user", {"condition": "lambda: 1"})
        assert snapshot(svc) == before and svc.rules_version() == version


def test_deleting_every_rule_sticks_and_scores_still_work(svc_db: Path) -> None:
    with ScoringService(Settings(db=svc_db)) as svc:
        for r in svc.list_rules():
            svc.delete_rule(r.name)
        uid = svc.store.profiles.ids(limit=1)[0]
        res = svc.score(uid)
        assert res["rules"] == [] and res["f_rule"] == 0.0 and 0 < res["score"] < 1
    with ScoringService(Settings(db=svc_db)) as svc:
        assert svc.list_rules() == []


def test_preview_counts_sampled_users(svc_db: Path) -> None:
    with ScoringService(Settings(db=svc_db)) as svc:
        ids = svc.store.profiles.sample_ids(150, seed=svc.settings.seed)
        docs = svc.store.profiles.get_many(ids)
        expected = sum(1 for d in docs.values() if d["tenure_months"] >= 24)
        assert svc.preview_rule("tenure_months >= 24", sample=150) == {
            "fired": expected, "sample": 150, "errors": 0, "error_examples": []}
        res = svc.preview_rule("event_counts['product.order'] > 0", sample=150)
        assert res["errors"] > 0 and res["error_examples"][0]["error"].startswith("KeyError")
        with pytest.raises(RuleCompileError):
            svc.preview_rule("open('x')")


def test_preview_past_its_deadline_is_refused_with_the_reason(svc_db: Path) -> None:
    from scoring.errors import EvaluationLimit

    with ScoringService(Settings(db=svc_db, rule_preview_timeout=1e-9)) as svc:
        with pytest.raises(EvaluationLimit, match="UPS_RULE_PREVIEW_TIMEOUT"):
            svc.preview_rule("str([tenure_months] * 9000) != ''", sample=150)


def test_a_rule_over_the_cost_bounds_for_stored_users_is_refused_when_saved(svc_db: Path) -> None:
    with ScoringService(Settings(db=svc_db)) as svc:
        for condition in ["[[tenure_months] * 9999] * 9999 == 0", "str([plan_type] * 9999) != ''"]:
            spec = {"name": "costly", "description": "", "weight": 1.0, "condition": condition}
            with pytest.raises(RuleCompileError, match="limit"):
                svc.create_rule(spec)
            with pytest.raises(RuleCompileError, match="limit"):
                svc.update_rule("high_value_user", {"condition": condition})
        assert "costly" not in [r.name for r in svc.list_rules()]
        svc.create_rule({"name": "cheap", "description": "", "weight": 1.0, "condition": "[tenure_months] * 3 != []"})


def test_rule_specs_may_be_pydantic_models(svc_db: Path) -> None:
    from pydantic import BaseModel

    class Body(BaseModel):
        name: str | None = None
        weight: float | None = None
        condition: str | None = None

    with ScoringService(Settings(db=svc_db)) as svc:
        svc.create_rule(Body(name="m", weight=0.5, condition="age > 30"))
        assert svc.update_rule("m", Body(weight=0.75))["condition"] == "age > 30"  # unset fields stay
        assert {r.name: r.weight for r in svc.list_rules()}["m"] == 0.75
