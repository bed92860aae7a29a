"""Gated fusion: its formula, rule-structure rebuilds, training on the planted labels, model versions."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scoring_support import SMALL, scoring_db, trained_db

from dataflow.generator import Population
from dataflow.oracle import generator_config, retention_oracle
from scoring.errors import BadRequest, NotEnoughData
from scoring.fusion import FusionCore
from scoring.neighbourhood import NODE_TYPE as NEIGHBOURHOOD, neighbourhood_means, neighbourhood_rows
from scoring.profile_features import LOG_MASK
from scoring.profile_features import NAMES as PROFILE_NAMES
from scoring.service import ScoringService
from storage.event_store import EventStore
from storage.embeddings import Embeddings
from storage.projections import Models, Profiles
from dataflow.prepare import prepare
from ups.cli import main
from config.settings import Settings

STRUCT = (("a", "monthly_fee > 1"), ("b", "tenure_months > 1"), ("c", "total_events > 1"))


def randomised(model: FusionCore, seed: int = 0) -> FusionCore:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        model.emb_mean.copy_(torch.randn(model.emb_dim, generator=g))
        model.emb_std.copy_(torch.rand(model.emb_dim, generator=g) + 0.5)
        model.x_mean.copy_(torch.rand(len(PROFILE_NAMES), generator=g) * 3)
        model.x_std.copy_(torch.rand(len(PROFILE_NAMES), generator=g) + 0.5)
    return model.eval()


def inputs(n: int, emb_dim: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random raw profile rows (some missing values), embeddings, rule vectors and rule scores."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 20.0, size=(n, len(PROFILE_NAMES))).astype(np.float32)
    x[0, 0] = np.nan  # a profile without a monthly fee
    h = rng.integers(0, 2, size=(n, 3)).astype(np.float32)
    e = rng.normal(size=(n, emb_dim)).astype(np.float32)
    return x, e, h, (h @ np.array([0.4, -0.5, 0.2])).astype(np.float32)


def test_score_is_the_gated_mix_of_calibrated_rule_head_and_gnn_head_in_logit_space() -> None:
    m = randomised(FusionCore(STRUCT, emb_dim=8, hidden=5))
    x, e, _, f = inputs(50, 8)
    out = m.serving().predict(x, e, f)
    with torch.no_grad():  # the numpy serving path computes what the torch module does
        ref = m(torch.as_tensor(x), torch.as_tensor(e), torch.as_tensor(f))
    for key in ("score", "gate", "f_rule_calibrated", "f_nn"):
        np.testing.assert_allclose(out[key], getattr(ref, key).numpy(), rtol=1e-4, atol=1e-5)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    t = np.where(LOG_MASK, np.log1p(np.maximum(x, 0)), x)
    xs = np.nan_to_num((t - m.x_mean.numpy()) / m.x_std.numpy())  # a missing value sits at the mean
    z = (e - m.emb_mean.numpy()) / m.emb_std.numpy()
    gate = sig(np.hstack([xs, z]) @ m.gate.weight.detach().numpy()[0] + m.gate.bias.item())  # g = σ(W[h_rule, h_nn])
    a = float(torch.nn.functional.softplus(m.rule_scale_raw.detach()))
    cal = sig(a * f + xs @ m.rule_profile.weight.detach().numpy()[0] + m.rule_profile.bias.item())
    np.testing.assert_allclose(out["gate"], gate, rtol=1e-4)
    np.testing.assert_allclose(out["f_rule_calibrated"], cal, rtol=1e-4)
    np.testing.assert_allclose(out["score"], sig(gate * logit(cal) + (1 - gate) * logit(out["f_nn"])), rtol=1e-4)
    assert np.all((out["score"] > 0) & (out["score"] < 1)) and a > 0


def test_a_rule_moves_the_score_only_its_weight_s_way() -> None:
    """Firing a rule of positive weight never lowers the score, of negative weight never raises it,
    whatever the rest of the user looks like (the gate does not read the rules, the scale is >= 0)."""
    weights = np.array([0.4, -0.5, 0.2])
    for seed in range(5):
        m = randomised(FusionCore(STRUCT, emb_dim=6, hidden=4), seed).serving()
        x, e, h, _ = inputs(200, 6, seed)
        for i, w in enumerate(weights):
            on, off = h.copy(), h.copy()
            on[:, i], off[:, i] = 1, 0
            diff = m.predict(x, e, on @ weights)["score"] - m.predict(x, e, off @ weights)["score"]
            assert np.all(diff * np.sign(w) >= 0) and np.any(diff != 0)


def test_untrained_core_is_neutral() -> None:
    x, e, _, _ = inputs(2, 4)
    out = FusionCore(STRUCT, emb_dim=4).serving().predict(x, e, np.array([0.0, 2.0]))
    np.testing.assert_allclose(out["gate"], 0.5)
    np.testing.assert_allclose(out["f_nn"], 0.5)
    np.testing.assert_allclose(out["f_rule_calibrated"], 1 / (1 + np.exp(-np.array([0.0, 2.0]))), rtol=1e-4)
    np.testing.assert_allclose(out["score"], 1 / (1 + np.exp(-0.5 * np.array([0.0, 2.0]))), rtol=1e-4)


def test_neighbourhood_is_the_mean_two_calls_away_weighted_by_calls() -> None:
    # calls 0→1 twice, 1→2 once; user 3 makes and gets none
    means = neighbourhood_means(np.array([0, 0, 1]), np.array([1, 1, 2]), np.eye(4, dtype=np.float32))
    expected = np.array([[2 / 3, 0, 1 / 3, 0],  # via 1: back to 0 (2 of 1's 3 calls) or on to 2
                         [0, 1, 0, 0],  # every path of two calls from 1 comes back to 1
                         [2 / 3, 0, 1 / 3, 0],
                         [0, 0, 0, 1]])  # without calls: the user's own vector
    np.testing.assert_allclose(means, expected, atol=1e-6)
    with pytest.raises(ValueError, match="index the 4 vectors"):
        neighbourhood_means(np.array([0]), np.array([4]), np.eye(4))


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_some_users_neighbourhoods_are_those_rows_of_everyones(hops: int) -> None:
    """What the refresh writes for a few users (reading only the calls around them) is what a full pass
    gives them: isolated users, self-calls and repeated calls among the calls."""
    rng = np.random.default_rng(hops)
    n = 60
    src, dst = rng.integers(0, 50, 150), rng.integers(0, 50, 150)  # users 50-59 make and get none
    src[:3] = dst[:3] = 7  # self-calls
    x = rng.normal(size=(n, 5))
    adj = sp.coo_matrix((np.ones(len(src)), (src, dst)), shape=(n, n)).tocsr()
    adj = (adj + adj.T).tocsr()
    users = np.array([0, 7, 8, 33, 52, 59])
    some = neighbourhood_rows(users, lambda u: adj[u], lambda u: x[u], n, hops)
    np.testing.assert_allclose(some, neighbourhood_means(src, dst, x, hops)[users], atol=1e-6)
    np.testing.assert_allclose(some[-2:], x[[52, 59]], atol=1e-6)


def test_rule_structure_change_keeps_every_weight_and_weights_round_trip() -> None:
    m = randomised(FusionCore(STRUCT, emb_dim=6, hidden=4))
    new_struct = (("a", "monthly_fee > 1"), ("b", "tenure_months > 99"), ("d", "spend > 1"))
    r = m.with_rules(new_struct)
    assert r.rule_names == ("a", "b", "d")
    old, new = m.state_dict(), r.state_dict()
    assert all(torch.equal(old[k], new[k]) for k in old)
    back = FusionCore.from_bytes(json.loads(json.dumps(r.config())), r.to_bytes())
    x, e, _, f = inputs(3, 6)
    np.testing.assert_array_equal(back.serving().predict(x, e, f)["score"], r.serving().predict(x, e, f)["score"])
    with pytest.raises(ValueError, match="weight layout 1"):  # an older UPS's fusion is not misread
        FusionCore.from_bytes({k: v for k, v in r.config().items() if k != "format"}, r.to_bytes())


def test_fusion_trained_on_planted_labels_beats_rule_only_and_gnn_only(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    db, res = trained_db(tmp_path_factory.getbasetemp(), tmp_path / "f.db", SMALL)
    auc = res["auc"]
    assert auc["fused"] > max(auc["rule"], auc["rule_head"], auc["gnn"]), auc
    assert auc["rule"] > 0.5 and auc["gnn"] > 0.5  # both parts carry signal on their own
    assert auc["rule_head"] > auc["rule"]  # the profile's numbers say more than the four rules
    assert auc["fused"] < auc["oracle"] < 1  # the generator's own propensity is the ceiling
    assert res["n_test"] >= 150 and res["embedding_missing_share"] == 0.0
    with EventStore(db) as store:
        row = Models(store.conn).latest("fusion")
        assert row is not None and row.version == res["model_version"] and row.metrics["auc"] == auc
        reg = [e for e in store.read(types=["model.registered"])]
        assert [(e.payload["kind"], e.payload["version"], e.seq) for e in reg] == [("fusion", row.version, row.seq)]
        uid = Profiles(store.conn).ids(limit=1)[0]
    with ScoringService(Settings(db=db)) as svc:
        s = svc.score(uid)
        assert s["fusion_version"] == res["model_version"] and not s["rule_side_rebuilt"]
        assert s["embedding_missing"] is False and s["model_version"] == 0
        # a rule change takes effect at once through the rule score; the trained weights are kept
        trained = svc._current().model.state_dict()
        svc.create_rule({"name": "talker", "weight": 0.1, "condition": "call_partners >= 5"})
        s2 = svc.score(uid)
        assert s2["rule_side_rebuilt"] and [r["name"] for r in s2["rules"]][-1] == "talker"
        kept = svc._current().model.state_dict()
        assert all(torch.equal(trained[k], kept[k]) for k in trained)
        talker = next(r for r in s2["rules"] if r["name"] == "talker")
        assert (s2["f_rule"] - s["f_rule"]) == pytest.approx(0.1 if talker["fired"] else 0.0)
        assert svc.refresh_rules()["rule_side_rebuilt"] is True


@lru_cache(maxsize=None)
def prepared_auc(root: str, seed: int) -> dict[str, float]:
    """Held-out AUCs of what `ups up` prepares on an empty database (2 000 users) at ``seed``: real HGT
    embeddings and their call neighbourhoods, then the fusion; ``best_input``: the best of rule score,
    rule head and GNN head."""
    out = prepare(Settings(db=Path(root) / f"ups-{seed}.db", seed=seed), lambda fraction, message: None)
    assert out.model is not None
    auc: dict[str, float | None] = out.model["fusion"]["auc"]
    got = {k: float(v) for k, v in auc.items() if v is not None}
    assert set(got) == set(auc), auc  # the test split gives every AUC
    return {**got, "best_input": max(got["rule"], got["rule_head"], got["gnn"])}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [42, 1, 2, 3])
def test_fused_score_is_at_least_as_good_as_its_best_input(tmp_path_factory: pytest.TempPathFactory,
                                                           seed: int) -> None:
    """The default dataset (seed 42) and three other seeds: no input alone does better than the fusion,
    and the generator's own propensity stays above it."""
    auc = prepared_auc(str(tmp_path_factory.getbasetemp()), seed)
    assert auc["best_input"] <= auc["fused"] < auc["oracle"], auc
    assert auc["oracle"] > 0.8  # the planted outcome is learnable


@pytest.mark.slow
def test_fused_score_beats_its_best_input_clearly_on_the_default_dataset(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """What `ups up` serves out of the box: the fusion adds at least 0.02 AUC to its best input."""
    auc = prepared_auc(str(tmp_path_factory.getbasetemp()), Settings().seed)
    assert auc["fused"] >= auc["best_input"] + 0.02, auc


def test_cli_train_fusion_json(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    db = scoring_db(tmp_path_factory.getbasetemp(), tmp_path / "c.db", SMALL)
    assert main(["train-fusion", "--db", str(db), "--json", "--quiet", "--epochs", "60", "--samples", "400",
                 "--lr", "0.02"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"auc", "loss", "model_version"}
    assert set(out["auc"]) == {"rule", "rule_head", "gnn", "fused", "oracle"} and out["auc"]["oracle"] > 0.5
    with EventStore(db) as store:
        row = Models(store.conn).get("fusion", out["model_version"])
        assert row is not None and row.kind == "fusion"
        assert row.config["epochs"] == 60 and row.config["samples"] == 400 and row.config["lr"] == 0.02
        assert row.metrics["n_train"] + row.metrics["n_val"] + row.metrics["n_test"] == 400
    with pytest.raises(SystemExit) as exit_info:
        main(["train-fusion", "--db", str(db), "--epochs", "0"])
    assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_training_needs_labels_profiles_and_sane_arguments(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    db = scoring_db(tmp_path_factory.getbasetemp(), tmp_path / "n.db", SMALL)
    with ScoringService(Settings(db=db)) as svc:
        for bad in ({"epochs": 0}, {"lr": -1.0}, {"lr": float("nan")}, {"samples": -3}):
            with pytest.raises(BadRequest):
                svc.train_fusion(**bad)  # type: ignore[arg-type]
    with ScoringService(Settings(db=db, fusion_label="upsell")) as svc:
        with pytest.raises(NotEnoughData, match="no label.observed events with label 'upsell'"):
            svc.train_fusion()
    with EventStore(db) as store:  # embeddings of a UPS that wrote no neighbourhoods: told what to run
        store.conn.execute("DELETE FROM embeddings WHERE node_type = ?", (NEIGHBOURHOOD,))
    with ScoringService(Settings(db=db)) as svc:
        with pytest.raises(NotEnoughData, match="no call neighbourhoods .*run `ups embed`"):
            svc.train_fusion()
    empty = tmp_path / "empty.db"
    with EventStore(empty) as store, EventStore(db) as src:
        store.append(src.read())  # the log without profiles
    with ScoringService(Settings(db=empty)) as svc:
        with pytest.raises(NotEnoughData, match="no profiles"):
            svc.train_fusion()


def test_untrained_service_follows_the_stored_embedding_size(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    db = scoring_db(tmp_path_factory.getbasetemp(), tmp_path / "u.db", SMALL, embeddings=False)
    with ScoringService(Settings(db=db, fusion_embedding_dim=8)) as svc:
        uid = svc.store.profiles.ids(limit=1)[0]
        before = svc.score(uid)
        assert before["embedding_missing"] is True and before["fusion_version"] is None
        with svc.store.transaction() as conn:
            Embeddings(conn).put_many([(NEIGHBOURHOOD, uid, np.ones(16, dtype=np.float32), 3, 1)])
        after = svc.score(uid)
        assert after["embedding_missing"] is False and after["model_version"] == 3
        assert after["score"] == pytest.approx(before["score"])  # untrained: the embedding cannot move it


def test_oracle_is_the_generators_propensity_and_only_for_its_own_dataset(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    db = scoring_db(tmp_path_factory.getbasetemp(), tmp_path / "o.db", SMALL)
    oracle = retention_oracle(db)
    assert oracle is not None
    got = oracle(["U0000000", "U0000005", "NOBODY"])
    np.testing.assert_allclose(got[:2], 1 - Population(SMALL).churn_p[[0, 5]])
    assert np.isnan(got[2])
    other = Settings(db=tmp_path / "x.db", users=SMALL.users, seed=SMALL.seed + 1)
    with EventStore(db) as store:  # without the record, the settings' config is tried against the log's tag
        store.conn.execute("DELETE FROM events WHERE type = 'ops.data_config'")
        assert generator_config(store, other) is None  # another seed: not this log's dataset
    assert retention_oracle(db, other) is None
