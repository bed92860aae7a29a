"""SHAP explanations: additivity in both modes, exact grouped values, the cache and its invalidation."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scoring_support import SMALL, trained_db

from scoring.errors import BadRequest, UserNotFound
from scoring.explainer import EMBEDDING_GROUP, RULE_SCORE, Background, Explainer, FusionPredictor
from scoring.fusion import FusionCore
from scoring.service import ScoringService
from storage.projections import Embeddings, Models
from config.settings import Settings


@pytest.fixture
def trained(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    return trained_db(tmp_path_factory.getbasetemp(), tmp_path / "e.db", SMALL)[0]


def some_users(svc: ScoringService, n: int) -> list[str]:
    return svc.store.profiles.sample_ids(n, seed=123)


def total(res: dict) -> float:
    return res["base_value"] + sum(c["value"] for c in res["contributions"])


def test_additivity_and_features_in_both_modes(trained: Path) -> None:
    with ScoringService(Settings(db=trained)) as svc:
        rule_names = [r["name"] for r in svc.list_rules()]
        for uid in some_users(svc, 4):
            score = svc.score(uid)["score"]
            per = svc.explain(uid, "per_dimension")
            assert per["score"] == pytest.approx(score, abs=1e-6) and per["prediction"] == pytest.approx(score, abs=1e-6)
            assert abs(total(per) - per["score"]) < 1e-3
            names = [c["feature"] for c in per["contributions"]]
            assert names == [*rule_names, *(f"emb_{i}" for i in range(32)), RULE_SCORE]
            grouped = svc.explain(uid, "grouped", top_k=2)
            assert abs(total(grouped) - grouped["score"]) < 1e-3 and grouped["exact"] is True
            assert [c["feature"] for c in grouped["contributions"]] == [*rule_names, EMBEDDING_GROUP, RULE_SCORE]
            assert per["base_value"] == pytest.approx(grouped["base_value"])  # same background, same model
            assert len(grouped["top_positive"]) <= 2 and len(grouped["top_negative"]) <= 2
            assert all(c["value"] > 0 for c in grouped["top_positive"])
            assert all(c["value"] < 0 for c in grouped["top_negative"])
            assert per["background"]["source"] == "sample" and per["background"]["size"] == 20
            assert {"gate", "f_rule", "f_nn", "rules", "embedding_missing"} <= set(per)


def exact_shapley(predict: FusionPredictor, background: np.ndarray, x: np.ndarray,
                  groups: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """The reference: Shapley values by enumerating every coalition of groups (interventional)."""
    k = len(groups)

    def value(coalition: tuple[int, ...]) -> float:
        rows = background.copy()
        for g in coalition:
            rows[:, groups[g]] = x[groups[g]]
        return float(predict(rows).mean())

    phi = np.zeros(k)
    for i in range(k):
        others = [j for j in range(k) if j != i]
        for size in range(k):
            for s in itertools.combinations(others, size):
                w = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
                phi[i] += w * (value(tuple(sorted(s + (i,)))) - value(s))
    return value(()), phi


def test_grouped_mode_gives_exact_shapley_values() -> None:
    struct = tuple((f"r{i}", f"tenure_months > {i}") for i in range(4))
    model = FusionCore(struct, emb_dim=5, hidden=4)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    model.eval()
    rng = np.random.default_rng(0)
    bg = np.hstack([rng.integers(0, 2, (7, 4)), rng.normal(size=(7, 5)), rng.normal(size=(7, 1))])
    ex = Explainer(model, Background(bg, "sample"))
    x = np.concatenate([[1, 0, 1, 1], rng.normal(size=5), [0.7]])
    res = ex.explain(x, "grouped")
    base, phi = exact_shapley(ex.predict, bg, x, [cols for _, cols in ex.groups])
    assert res.exact and res.base_value == pytest.approx(base, abs=1e-9)
    np.testing.assert_allclose([v for _, v in res.contributions], phi, atol=1e-7)  # float32 model arithmetic
    # per-dimension Kernel SHAP on few features enumerates every coalition too, hence exact as well
    small = FusionCore(struct[:2], emb_dim=2, hidden=3)
    with torch.no_grad():
        for p in small.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    ex2 = Explainer(small.eval(), Background(bg[:, [0, 1, 4, 5, 9]], "sample"))
    x2 = x[[0, 1, 4, 5, 9]]
    res2 = ex2.explain(x2, "per_dimension")
    base2, phi2 = exact_shapley(ex2.predict, ex2.background.matrix, x2, [np.array([i]) for i in range(5)])
    assert res2.exact
    np.testing.assert_allclose([v for _, v in res2.contributions], phi2, atol=1e-7)  # float32 model arithmetic


def test_cache_is_invalidated_by_rule_and_model_changes(trained: Path) -> None:
    with ScoringService(Settings(db=trained)) as svc:
        uid = some_users(svc, 1)[0]
        first = svc.explain(uid, "grouped")
        assert first["cached"] is False
        again = svc.explain(uid, "grouped", top_k=1)
        assert again["cached"] is True and again["contributions"] == first["contributions"]
        assert len(again["top_positive"]) <= 1
        assert svc.explain(uid, "per_dimension")["cached"] is False  # modes are cached separately

        # rule change
        svc.create_rule({"name": "talker", "weight": 0.3, "condition": "call_partners >= 3"})
        after_rule = svc.explain(uid, "grouped")
        assert after_rule["cached"] is False and "talker" in [c["feature"] for c in after_rule["contributions"]]
        assert svc.explain(uid, "grouped")["cached"] is True

        # fusion model change (a new version registered, here by another service as the API's job would)
        with ScoringService(Settings(db=trained)) as other:
            version = other.train_fusion(epochs=20)["model_version"]
        after_model = svc.explain(uid, "grouped")
        assert after_model["cached"] is False and after_model["fusion_version"] == version

        # embedding model change: the user's vector rewritten by a new HGT version
        assert svc.explain(uid, "grouped")["cached"] is True
        with svc.store.transaction() as conn:
            hgt = Models(conn).add("hgt", {}, {}, None)
            vec = Embeddings(conn).get("user", uid)
            assert vec is not None
            Embeddings(conn).put_many([("user", uid, vec.vector * 2, hgt, svc.store.last_seq())])
        after_emb = svc.explain(uid, "grouped")
        assert after_emb["cached"] is False and after_emb["model_version"] == hgt

        # explicit clear
        assert svc.explain(uid, "grouped")["cached"] is True
        assert svc.clear_cache() >= 1
        assert svc.explain(uid, "grouped")["cached"] is False


def test_background_choices_and_bad_requests(trained: Path) -> None:
    with ScoringService(Settings(db=trained)) as svc:
        ids = some_users(svc, 3)
    settings = Settings(db=trained, explain_background_ids=[*ids, "NOBODY"])
    with ScoringService(settings) as svc:
        res = svc.explain(ids[0], "grouped")
        assert res["background"]["source"] == "configured" and res["background"]["size"] == 3
        assert res["background"]["missing_ids"] == ["NOBODY"]
        assert abs(total(res) - res["score"]) < 1e-3
        with pytest.raises(UserNotFound):
            svc.explain("NOBODY")
        with pytest.raises(BadRequest, match="mode"):
            svc.explain(ids[0], "sideways")
        with pytest.raises(BadRequest, match="top_k"):
            svc.explain(ids[0], top_k=0)
    with ScoringService(Settings(db=trained, explain_background_ids=["NOBODY"])) as svc:
        res = svc.explain(ids[0], "per_dimension")
        assert res["background"]["source"] == "zeros" and res["background"]["size"] == 1
        assert abs(total(res) - res["score"]) < 1e-3


def test_user_without_embedding_is_flagged(trained: Path) -> None:
    with ScoringService(Settings(db=trained)) as svc:
        uid = some_users(svc, 1)[0]
        svc.store.conn.execute("DELETE FROM embeddings WHERE node_type = 'user' AND node_id = ?", (uid,))
        s = svc.score(uid)
        assert s["embedding_missing"] is True and s["model_version"] is None and "zero vector" in s["embedding_note"]
        e = svc.explain(uid, "grouped")
        assert e["embedding_missing"] is True and abs(total(e) - e["score"]) < 1e-3
