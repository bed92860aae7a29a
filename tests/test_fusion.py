"""Gated fusion: its formula, rule-structure rebuilds, training on the planted labels, model versions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scoring_support import SMALL, build_db, scoring_db, trained_db

from dataflow.generator import GeneratorConfig
from scoring.errors import BadRequest, NotEnoughData
from scoring.fusion import FusionCore
from scoring.service import ScoringService
from storage.event_store import EventStore
from storage.projections import Embeddings, Models, Profiles
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
    return model.eval()


def test_score_is_the_gated_mix_of_calibrated_rule_score_and_gnn_score() -> None:
    m = randomised(FusionCore(STRUCT, emb_dim=8, hidden=5))
    rng = np.random.default_rng(1)
    h = rng.integers(0, 2, size=(50, 3)).astype(np.float32)
    e = rng.normal(size=(50, 8)).astype(np.float32)
    f = (h @ np.array([0.4, -0.5, 0.2])).astype(np.float32)
    out = m.serving().predict(h, e, f)
    with torch.no_grad():  # the numpy serving path computes what the torch module does
        ref = m(torch.as_tensor(h), torch.as_tensor(e), torch.as_tensor(f))
    for key in ("score", "gate", "f_rule_calibrated", "f_nn"):
        np.testing.assert_allclose(out[key], getattr(ref, key).numpy(), rtol=1e-5, atol=1e-6)
    z = (e - m.emb_mean.numpy()) / m.emb_std.numpy()
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    w = np.concatenate([m.gate_rule.detach().numpy(), m.gate_emb.weight.detach().numpy()[0]])
    gate = sig(np.hstack([h, z]) @ w + m.gate_emb.bias.item())  # g = σ(W[h_rule, h_nn])
    cal = sig(m.rule_scale.item() * f + m.rule_shift.item())
    np.testing.assert_allclose(out["gate"], gate, rtol=1e-5)
    np.testing.assert_allclose(out["f_rule_calibrated"], cal, rtol=1e-5)
    np.testing.assert_allclose(out["score"], gate * cal + (1 - gate) * out["f_nn"], rtol=1e-5)
    assert np.all((out["score"] > 0) & (out["score"] < 1))


def test_untrained_core_is_neutral() -> None:
    out = FusionCore(STRUCT, emb_dim=4).serving().predict(np.ones((2, 3)), np.zeros((2, 4)), np.array([0.0, 2.0]))
    np.testing.assert_allclose(out["gate"], 0.5)
    np.testing.assert_allclose(out["f_nn"], 0.5)
    np.testing.assert_allclose(out["score"], 0.5 * (1 / (1 + np.exp(-np.array([0.0, 2.0])))) + 0.25, rtol=1e-6)


def test_rule_structure_change_rebuilds_rule_side_and_keeps_embedding_side() -> None:
    m = randomised(FusionCore(STRUCT, emb_dim=6, hidden=4))
    new_struct = (("a", "monthly_fee > 1"), ("b", "tenure_months > 99"), ("d", "spend > 1"))
    r = m.with_rules(new_struct)
    assert r.rule_names == ("a", "b", "d")
    old, new = m.state_dict(), r.state_dict()
    for k in old:
        if k != "gate_rule":  # embedding side and calibration kept as they were
            assert torch.equal(old[k], new[k]), k
    assert new["gate_rule"][0] == old["gate_rule"][0]  # unchanged rule keeps its weight
    assert new["gate_rule"][1] == 0 and new["gate_rule"][2] == 0  # changed condition and new rule start at 0
    # round trip through the stored form
    back = FusionCore.from_bytes(json.loads(json.dumps(r.config())), r.to_bytes())
    x = (np.eye(3, dtype=np.float32), np.ones((3, 6), dtype=np.float32), np.array([0.1, 0.2, 0.3], dtype=np.float32))
    np.testing.assert_array_equal(back.serving().predict(*x)["score"], r.serving().predict(*x)["score"])


def test_fusion_trained_on_planted_labels_beats_rule_only_and_gnn_only(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    db, res = trained_db(tmp_path_factory.getbasetemp(), tmp_path / "f.db", SMALL)
    auc = res["auc"]
    assert auc["fused"] > max(auc["rule"], auc["gnn"]), auc
    assert auc["rule"] > 0.5 and auc["gnn"] > 0.5  # both parts carry signal on their own
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
        # a rule change rebuilds the rule side in place, keeping the trained embedding side
        trained = svc._current().model.state_dict()
        svc.create_rule({"name": "talker", "weight": 0.1, "condition": "call_partners >= 5"})
        s2 = svc.score(uid)
        assert s2["rule_side_rebuilt"] and [r["name"] for r in s2["rules"]][-1] == "talker"
        kept = svc._current().model.state_dict()
        for k in ("head.0.weight", "head.2.weight", "gate_emb.weight", "emb_mean", "rule_scale"):
            assert torch.equal(trained[k], kept[k])
        assert svc.refresh_rules()["rule_side_rebuilt"] is True


@pytest.mark.slow
def test_default_mock_data_reaches_the_auc_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default mock data (2000 users, seed 42) with stand-in spectral embeddings, via the CLI."""
    db = build_db(tmp_path / "default.db", GeneratorConfig())
    assert main(["train-fusion", "--db", str(db), "--json", "--quiet"]) == 0
    auc = json.loads(capsys.readouterr().out)["auc"]
    assert auc["fused"] >= max(auc["rule"], auc["gnn"]) + 0.02, auc


def test_cli_train_fusion_json(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    db = scoring_db(tmp_path_factory.getbasetemp(), tmp_path / "c.db", SMALL)
    assert main(["train-fusion", "--db", str(db), "--json", "--quiet", "--epochs", "60", "--samples", "400",
                 "--lr", "0.02"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"auc", "loss", "model_version"} and set(out["auc"]) == {"rule", "gnn", "fused"}
    with EventStore(db) as store:
        row = Models(store.conn).get("fusion", out["model_version"])
        assert row is not None and row.kind == "fusion"
        assert row.config["epochs"] == 60 and row.config["samples"] == 400 and row.config["lr"] == 0.02
        assert row.metrics["n_train"] + row.metrics["n_test"] == 400
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
        uid = Profiles(svc.conn).ids(limit=1)[0]
        before = svc.score(uid)
        assert before["embedding_missing"] is True and before["fusion_version"] is None
        with svc.store.transaction() as conn:
            Embeddings(conn).put_many([("user", uid, np.ones(16, dtype=np.float32), 3, 1)])
        after = svc.score(uid)
        assert after["embedding_missing"] is False and after["model_version"] == 3
        assert after["score"] == pytest.approx(before["score"])  # untrained: the embedding cannot move it
