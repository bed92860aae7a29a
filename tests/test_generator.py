from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dataflow.generator import LIVE_CHUNK, GeneratorConfig, MockGenerator
from storage.events import validate_event


def digest(gen: MockGenerator) -> str:
    h = hashlib.sha256()
    for e in gen.dataset():
        h.update(e.to_json().encode())
        h.update(b"\n")
    for e in gen.live_chunk(0, 1.8e9, 100.0):
        h.update(e.to_json().encode())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    cfg = GeneratorConfig(users=150, products=10, apps=8, events_per_user=6, seed=3)
    assert digest(MockGenerator(cfg)) == digest(MockGenerator(cfg))
    other = GeneratorConfig(users=150, products=10, apps=8, events_per_user=6, seed=4)
    assert digest(MockGenerator(other)) != digest(MockGenerator(cfg))


def test_every_generated_event_is_valid(small_gen: MockGenerator) -> None:
    events = list(small_gen.dataset()) + small_gen.live_chunk(3, 1.8e9, 50.0)
    for e in events:
        assert validate_event(e.to_dict()) == e
    ids = [e.event_id for e in events]
    assert len(set(ids)) == len(ids)
    types = {e.type for e in events}
    assert {"user.registered", "product.listed", "app.listed", "call", "product.order", "product.click",
            "app.usage", "app.click", "label.observed"} <= types


def test_history_is_in_time_order_with_zh_cn_values(small_gen: MockGenerator) -> None:
    hist = list(small_gen.history_events())
    ts = [e.ts for e in hist]
    assert ts == sorted(ts)
    assert small_gen.history_start <= ts[0] and ts[-1] <= small_gen.cfg.history_end
    assert len(hist) == pytest.approx(300 * 15, rel=0.25)
    page = small_gen.users_page(10, 5)
    assert [u["user_id"] for u in page] == [f"U{i:07d}" for i in range(10, 15)]
    assert any("\u4e00" <= ch <= "\u9fff" for ch in page[0]["name"])  # Chinese characters


def test_live_stream_resumes_at_any_index(small_gen: MockGenerator) -> None:
    it = small_gen.live(0, 1.8e9, 200.0)
    first = [next(it) for _ in range(LIVE_CHUNK + 50)]
    resumed = small_gen.live(LIVE_CHUNK - 20, 1.8e9, 200.0)
    again = [next(resumed) for _ in range(70)]
    assert [e.to_json() for e in again] == [e.to_json() for e in first[LIVE_CHUNK - 20 :]]
    assert first[1].ts - first[0].ts == pytest.approx(1 / 200.0, abs=1e-3)


def test_planted_signal_is_visible_in_the_events() -> None:
    """Labels correlate with rule-visible features and with call-graph neighbours' labels."""
    gen = MockGenerator(GeneratorConfig(users=3000, events_per_user=20, label_share=1.0, seed=11))
    attrs: dict[str, dict] = {}
    activity: dict[str, int] = defaultdict(int)
    partners: dict[str, list[str]] = defaultdict(list)
    risky_apps = {a["app_id"] for a in gen.cat.apps[gen.cat.n_normal_apps :]}
    risky_use: dict[str, int] = defaultdict(int)
    label: dict[str, int] = {}
    for e in gen.dataset():
        if e.type == "user.registered":
            attrs[e.user_id] = e.payload
        elif e.type == "label.observed":
            label[e.user_id] = e.payload["value"]
        elif e.user_id:
            activity[e.user_id] += 1
            if e.type == "call":
                partners[e.user_id].append(e.target_id)
                partners[e.target_id].append(e.user_id)
            if e.target_id in risky_apps:
                risky_use[e.user_id] += 1
    users = sorted(label)
    y = np.array([label[u] for u in users])
    assert 0.15 < y.mean() < 0.6
    fee = np.array([attrs[u]["monthly_fee"] for u in users])
    tenure = np.array([attrs[u]["tenure_months"] for u in users])
    act = np.array([activity[u] for u in users])
    # rule-visible: low fee, short tenure, low activity mean churn
    assert roc_auc_score(y, -fee) > 0.6
    assert roc_auc_score(y, -tenure) > 0.58
    assert roc_auc_score(y, -act) > 0.6
    # graph: neighbours' labels and competitor-app use carry signal the user's own row does not
    neigh = np.array([np.mean([label[p] for p in partners[u]]) if partners[u] else y.mean() for u in users])
    assert roc_auc_score(y, neigh) > 0.6
    share = np.array([risky_use[u] / max(activity[u], 1) for u in users])
    assert roc_auc_score(y, share) > 0.6
    # and the graph part is not just a copy of the rule part
    assert abs(np.corrcoef(neigh, fee)[0, 1]) < 0.2


def test_bad_config_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="users must be at least 2; label_share must be within"):
        GeneratorConfig(users=1, label_share=2)
