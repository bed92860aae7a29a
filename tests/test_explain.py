"""SHAP explanations: additivity in both modes, exact grouped values, the cache and its invalidation."""

from __future__ import annotations

import itertools
import re
import math
from pathlib import Path

import numpy as np
import pytest
import shap
import torch
from scoring_support import SMALL, trained_db

from scoring.errors import BadRequest, UserNotFound
from scoring.explainer import NEIGHBOURHOOD_GROUP, PROFILE_GROUP, Background, Explainer, FusionPredictor
from scoring.explanation_text import fmt_value
from scoring.profile_features import NAMES as PROFILE_NAMES
from scoring.fusion import FusionCore
from scoring.kernel_shap import kernel_shap
from scoring.neighbourhood import NODE_TYPE as NEIGHBOURHOOD
from scoring.service import ScoringService
from storage.embeddings import Embeddings
from storage.projections import Models
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
        rule_names = sorted(r.name for r in svc.list_rules())
        for uid in some_users(svc, 4):
            score = svc.score(uid)["score"]
            per = svc.explain(uid, "per_dimension")
            assert per["score"] == pytest.approx(score, abs=1e-6) and per["prediction"] == pytest.approx(score, abs=1e-6)
            assert abs(total(per) - per["score"]) < 1e-3
            names = [c["feature"] for c in per["contributions"]]
            assert names == [*rule_names, *PROFILE_NAMES, *(f"neighbourhood_{i}" for i in range(32))]
            grouped = svc.explain(uid, "grouped", top_k=2)
            assert abs(total(grouped) - grouped["score"]) < 1e-3 and grouped["exact"] is True
            assert [c["feature"] for c in grouped["contributions"]] == [*rule_names, PROFILE_GROUP, NEIGHBOURHOOD_GROUP]
            assert per["base_value"] == pytest.approx(grouped["base_value"])  # same background, same model
            assert len(grouped["top_positive"]) <= 2 and len(grouped["top_negative"]) <= 2
            assert all(c["value"] > 0 for c in grouped["top_positive"])
            assert all(c["value"] < 0 for c in grouped["top_negative"])
            assert per["background"]["source"] == "sample" and per["background"]["size"] == 20
            assert {"gate", "f_rule", "f_nn", "rules", "embedding_missing"} <= set(per)


def test_contributions_come_with_values_and_read_as_sentences(trained: Path) -> None:
    with ScoringService(Settings(db=trained)) as svc:
        # a rule that fires for about half the users, one that cannot change anything (weight 0)
        svc.create_rule({"name": "talker", "weight": 0.3, "condition": "call_partners >= 5"})
        svc.create_rule({"name": "neutral", "weight": 0.0, "condition": "age > 30"})
        background = svc._background(svc._current())
        fired_somewhere = False
        for uid in some_users(svc, 12):
            profile = svc.profile(uid)
            rules = {r["name"]: r for r in svc.score(uid)["rules"]}
            for mode in ("grouped", "per_dimension"):
                res = svc.explain(uid, mode)
                by = {c["feature"]: c for c in res["contributions"]}
                assert by["neutral"]["value"] == 0.0 and by["neutral"]["text"].endswith("does not change the score")
                talker = by["talker"]
                assert talker["feature_value"] == float(rules["talker"]["fired"])
                if rules["talker"]["fired"] and mode == "grouped":  # exact: a fired positive rule never lowers
                    fired_somewhere = True
                    assert talker["value"] >= 0 and "lowers" not in talker["text"]
                share = np.mean([svc.profile(u)["call_partners"] >= 5 for u in background.user_ids])
                assert talker["background_value"] == pytest.approx(share)
                assert talker["text"].startswith(f"rule talker {'fired' if rules['talker']['fired'] else 'did not fire'}"
                                                 f" (fires for {share:.0%} on average) ")
                for c in res["top_positive"] + res["top_negative"]:
                    verb = "raise" if c["value"] > 0 else "lower"
                    assert re.search(f"{verb}s? the score by {abs(c['value']):.3f}$", c["text"]), c
            fee = by["monthly_fee"]  # per-dimension: each profile number with the background's average
            assert fee["feature_value"] == profile["monthly_fee"] and fee["label"] == "monthly fee"
            mean_fee = np.mean([svc.profile(u)["monthly_fee"] for u in background.user_ids])
            assert fee["background_value"] == pytest.approx(mean_fee)
            assert fee["text"].startswith(f"monthly fee {fmt_value(profile['monthly_fee'])} (average {fmt_value(mean_fee)}) ")
            # the graph side is named for what it is: the user's call neighbourhood
            dim = by["neighbourhood_3"]
            assert dim["kind"] == "neighbourhood" and dim["label"] == "call neighbourhood dimension 3"
            assert dim["text"].startswith(f"call neighbourhood dimension 3 {fmt_value(dim['feature_value'])} (average ")
            group = {c["feature"]: c for c in svc.explain(uid, "grouped")["contributions"]}[NEIGHBOURHOOD_GROUP]
            assert group["kind"] == "neighbourhood" and group["text"].startswith("the call neighbourhood (the users within two calls")
        assert fired_somewhere


def test_top_five_is_stable_across_sampling_seeds(trained: Path) -> None:
    """The sample size keeps the five largest per-dimension contributions the same on two runs with
    different sampling seeds for at least 95 % of users."""
    with ScoringService(Settings(db=trained, explain_seed=1)) as one, \
            ScoringService(Settings(db=trained, explain_seed=2)) as two:
        users = some_users(one, 40)
        same = 0
        for uid in users:
            tops = []
            for svc in (one, two):
                res = svc.explain(uid, "per_dimension")
                assert abs(total(res) - res["score"]) < 1e-3
                ranked = sorted(res["contributions"], key=lambda c: -abs(c["value"]))
                tops.append({c["feature"] for c in ranked[:5]})
            same += tops[0] == tops[1]
        assert same >= 0.95 * len(users), f"{same} of {len(users)}"


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


def random_core(struct: tuple[tuple[str, str], ...], emb_dim: int, g: torch.Generator) -> FusionCore:
    model = FusionCore(struct, emb_dim=emb_dim, hidden=4)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model.eval()


def test_grouped_mode_gives_exact_shapley_values() -> None:
    struct = tuple((f"r{i}", f"tenure_months > {i}") for i in range(4))
    g = torch.Generator().manual_seed(3)
    model = random_core(struct, 5, g)
    weights = np.array([0.4, -0.5, 0.0, 0.2])  # r2 has weight 0: not a player, contribution 0
    rng = np.random.default_rng(0)
    n_x = len(PROFILE_NAMES)
    bg = np.hstack([rng.integers(0, 2, (7, 4)), rng.gamma(2, 10, (7, n_x)), rng.normal(size=(7, 5))])
    ex = Explainer(model, weights, Background(bg, "sample"))
    x = np.concatenate([[1, 0, 1, 1], rng.gamma(2, 10, n_x), rng.normal(size=5)])
    res = ex.explain(x, "grouped")
    assert [n for n, _ in ex.groups] == ["r0", "r1", "r3", PROFILE_GROUP, NEIGHBOURHOOD_GROUP]
    game, players_bg, players_x = ex._game(x)  # r2, not a player, stays at the user's value
    assert players_bg.shape[1] == bg.shape[1] - 1
    base, phi = exact_shapley(game, players_bg, players_x, [cols for _, cols in ex.groups])
    got = dict(res.contributions)
    assert res.exact and res.base_value == pytest.approx(base, abs=1e-9) and got["r2"] == 0.0
    np.testing.assert_allclose([got[n] for n, _ in ex.groups], phi, atol=1e-6)  # float32 model arithmetic
    # per-dimension Kernel SHAP on few features enumerates every coalition too, hence exact as well
    small = random_core(struct[:2], 1, g)
    ex2 = Explainer(small, weights[:2], Background(bg[:, [0, 1, *range(4, 4 + n_x), 4 + n_x]], "sample"))
    ex2.players = [0, 1, 2, 3, len(ex2.names) - 1]  # hold most profile numbers: few enough to enumerate
    x2 = x[[0, 1, *range(4, 4 + n_x), 4 + n_x]]
    res2 = ex2.explain(x2, "per_dimension")
    game2, bg2, px2 = ex2._game(x2)
    base2, phi2 = exact_shapley(game2, bg2, px2, [np.array([i]) for i in range(len(ex2.players))])
    got2 = dict(res2.contributions)
    assert res2.exact and res2.base_value == pytest.approx(base2, abs=1e-9)
    np.testing.assert_allclose([got2[ex2.names[i]] for i in ex2.players], phi2, atol=1e-6)


def test_kernel_shap_equals_shap_s_kernel_explainer() -> None:
    """Where both enumerate every coalition the values are shap's; with sampled coalitions they are close
    to them and add up to the prediction exactly."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 6))

    def f(rows: np.ndarray) -> np.ndarray:
        return np.tanh(rows @ w).sum(axis=1) + rows[:, 0] * rows[:, 1]

    bg, x = rng.normal(size=(12, 8)), rng.normal(size=8)
    x[3] = bg[:, 3] = 0.5  # equal to the background everywhere: cannot move the output, value 0
    ours = kernel_shap(f, x, bg, 2048)
    ref = np.ravel(shap.KernelExplainer(f, bg).shap_values(x[None, :], nsamples=2048, l1_reg=False, silent=True))
    assert ours.exact and ours.phi[3] == 0.0
    np.testing.assert_allclose(ours.phi, ref, atol=1e-9)
    wide = rng.normal(size=(30, 4))
    g = lambda rows: np.tanh(rows @ wide).sum(axis=1)  # noqa: E731
    bg30, x30 = rng.normal(size=(10, 30)), rng.normal(size=30)
    sampled = kernel_shap(g, x30, bg30, 1000, seed=1)
    ref30 = np.ravel(shap.KernelExplainer(g, bg30).shap_values(x30[None, :], nsamples=1000, l1_reg=False, silent=True))
    assert not sampled.exact and sampled.coalitions == 1000
    assert sampled.base_value + sampled.phi.sum() == pytest.approx(sampled.prediction, abs=1e-9)
    assert np.abs(sampled.phi - ref30).max() < 0.1 * np.abs(ref30).max()


def test_coalition_scores_equal_the_model_on_every_mixed_row() -> None:
    """The structured evaluation Kernel SHAP uses gives what the model gives on each coalition's rows."""
    struct = tuple((f"r{i}", f"tenure_months > {i}") for i in range(3))
    predict = FusionPredictor(random_core(struct, 6, torch.Generator().manual_seed(5)), np.array([0.4, -0.5, 0.2]))
    rng = np.random.default_rng(2)
    x, bg = rng.normal(size=predict.width), rng.normal(size=(7, predict.width))
    take = rng.random((40, predict.width)) < 0.5
    rows = np.where(take[:, None, :], x[None, None, :], bg[None, :, :]).reshape(-1, predict.width)
    np.testing.assert_allclose(predict.coalition_scores(take, x, bg),
                               predict(rows, standardised=True).reshape(40, 7), atol=1e-5)


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

        # embedding model change: the user's neighbourhood vector (the fusion's graph input) rewritten by a
        # new HGT version
        assert svc.explain(uid, "grouped")["cached"] is True
        with svc.store.transaction() as conn:
            hgt = Models(conn).add("hgt", {}, {}, None)
            vec = Embeddings(conn).get(NEIGHBOURHOOD, uid)
            assert vec is not None
            Embeddings(conn).put_many([(NEIGHBOURHOOD, uid, vec.vector * 2, hgt, svc.store.last_seq())])
        after_emb = svc.explain(uid, "grouped")
        assert after_emb["cached"] is False and after_emb["model_version"] == hgt

        # explicit clear
        assert svc.explain(uid, "grouped")["cached"] is True
        assert svc.clear_cache() >= 1
        assert svc.explain(uid, "grouped")["cached"] is False


def test_cache_follows_the_neighbourhood_row_a_partners_refresh_rewrites(trained: Path) -> None:
    """The refresh rewrites a user's neighbourhood row when a call partner's embedding changes: same
    model version, same seq (the user's own last event), another vector. The explanation's score is
    the one the user is scored with now, not the cached one."""
    with ScoringService(Settings(db=trained)) as svc:
        uid = some_users(svc, 1)[0]
        first = svc.explain(uid, "grouped")
        assert svc.explain(uid, "grouped")["cached"] is True
        row = svc.store.embeddings.get(NEIGHBOURHOOD, uid)
        assert row is not None
        with svc.store.transaction() as conn:
            Embeddings(conn).put_many([(NEIGHBOURHOOD, uid, row.vector * 2 + 1, row.model_version, row.seq)])
        now = svc.score(uid)["score"]
        assert abs(now - first["score"]) > 1e-6  # (the rewrite moves the score)
        after = svc.explain(uid, "grouped")
        assert after["cached"] is False and after["score"] == pytest.approx(now, abs=1e-9)
        assert total(after) == pytest.approx(now, abs=1e-3)


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
        svc.store.conn.execute("DELETE FROM embeddings WHERE node_type IN ('user', ?) AND node_id = ?",
                               (NEIGHBOURHOOD, uid))
        s = svc.score(uid)
        assert s["embedding_missing"] is True and s["model_version"] is None and "zero vector" in s["embedding_note"]
        e = svc.explain(uid, "grouped")
        assert e["embedding_missing"] is True and abs(total(e) - e["score"]) < 1e-3
