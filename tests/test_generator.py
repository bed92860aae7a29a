from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dataflow.generator import EDGE_RANGES, LIVE_CHUNK, NO_LIMIT, TYPE_MIX, GeneratorConfig, MockGenerator
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


def test_people_who_call_each_other_use_the_same_apps() -> None:
    """A community's app taste: call partners' app use is far more alike than random users' (what lets a
    graph model predict user-app links beyond popularity)."""
    gen = MockGenerator(GeneratorConfig(users=3000, events_per_user=20, seed=11))
    apps = {a["app_id"]: k for k, a in enumerate(gen.cat.apps[: gen.cat.n_normal_apps])}
    use: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(apps)))
    calls = []
    for e in gen.history_events():
        if e.type in ("app.usage", "app.click") and e.target_id in apps:
            use[e.user_id][apps[e.target_id]] += 1
        elif e.type == "call":
            calls.append((e.user_id, e.target_id))

    def similarity(pairs: list[tuple[str, str]]) -> float:
        a = np.array([use[x] for x, _ in pairs])
        b = np.array([use[y] for _, y in pairs])
        norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        ok = norm > 0
        return float(np.mean((a * b).sum(1)[ok] / norm[ok]))

    ids = sorted(use)
    rng = np.random.default_rng(0)
    random_pairs = [(ids[i], ids[j]) for i, j in rng.integers(0, len(ids), size=(len(calls), 2))]
    assert similarity(calls) > similarity(random_pairs) + 0.25


def test_product_choice_follows_the_segment() -> None:
    """Subscribers of one segment (plan, fee band, age band) buy and click alike, far more than random
    pairs; of one plan alone, still more alike (what a graph model learns from the plan feature)."""
    gen = MockGenerator(GeneratorConfig(users=3000, events_per_user=20, seed=11))
    h = gen._history_arrays()
    prod = (h["type"] == 1) | (h["type"] == 2)
    use = np.zeros((gen.cfg.users, gen.cfg.products))
    np.add.at(use, (h["user"][prod], h["target"][prod]), 1.0)
    use /= np.maximum(np.linalg.norm(use, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, gen.cfg.users, size=(2, 200_000))
    sim = (use[a] * use[b]).sum(1)
    seg, plan = gen.pop.segment, gen.pop.plan
    same_segment = sim[(seg[a] == seg[b]) & (a != b)].mean()
    same_plan = sim[(plan[a] == plan[b]) & (seg[a] != seg[b])].mean()
    other = sim[plan[a] != plan[b]].mean()
    assert same_segment > other + 0.2 and same_plan > other + 0.05, (same_segment, same_plan, other)


def test_bad_config_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="users must be at least 2; label_share must be within"):
        GeneratorConfig(users=1, label_share=2)


def test_app_taste_tables_stay_small_and_draw_popularity_times_taste() -> None:
    """Many communities and apps: tastes are shared past TASTES_MAX and apps grouped past TASTE_GROUPS_MAX
    (the tables stay bounded), and the draws follow P(app) ∝ popularity · exp(taste of its group)."""
    from dataflow.generator import COMMUNITY_APP_TASTE, TASTE_GROUPS_MAX, TASTES_MAX, Catalogue

    cfg = GeneratorConfig(users=10_000, community_size=2, apps=204)
    cat = Catalogue(cfg.seed, cfg.products, cfg.apps, cfg.communities)
    assert cat.app_taste.n_rows == TASTES_MAX and cat.app_taste.n_groups == TASTE_GROUPS_MAX
    assert cat.app_taste.taste_cdf.size == TASTES_MAX * TASTE_GROUPS_MAX + 1
    # the taste as drawn (seed stream 7), and the distribution it defines
    taste = np.random.default_rng([cfg.seed, 7]).normal(scale=COMMUNITY_APP_TASTE, size=(TASTES_MAX, TASTE_GROUPS_MAX))
    group = np.arange(cat.n_normal_apps) % TASTE_GROUPS_MAX
    rng = np.random.default_rng(0)
    n = 400_000
    for community in (7, 7 + TASTES_MAX):  # the same taste
        picks = cat.pick_normal_apps(np.full(n, community), rng.random(n))
        freq = np.bincount(picks, minlength=cat.n_normal_apps) / n
        expected = cat.app_pop * np.exp(taste[7, group])
        expected /= expected.sum()
        np.testing.assert_allclose(freq, expected, atol=0.004)


# --------------------------------------------------------------------------- per-user edge ranges

#: sha256 of the default dataset and live chunk 0 (``digest``) and the default tag, measured on
#: generator version 4 (product choice by segment) without per-user edge ranges: other figures (AUCs,
#: benchmarks) are compared on exactly this dataset, so unbounded ranges must leave every event as it was.
DEFAULT_DIGEST = "e3a5b8fe4f983d99c2284a501cb20a7bc7c4616949cca9eb13a940e4fe3f52b0"
DEFAULT_TAG = "dd51ff45"
#: the same for the browser tests' small dataset (users=300, events_per_user=8, as the settings give it: 8.0)
CONSOLE_DIGEST = "f20b1d1ea6b3a3aeca1552939fa1a35a23bd43ab2897e2ebe6b8d769e33bc8ba"


def test_default_dataset_is_unchanged_by_edge_ranges() -> None:
    gen = MockGenerator(GeneratorConfig())
    assert gen.tag == DEFAULT_TAG
    assert digest(gen) == DEFAULT_DIGEST
    assert digest(MockGenerator(GeneratorConfig(users=300, events_per_user=8))) == CONSOLE_DIGEST


def _per_user(gen: MockGenerator) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in gen.history_events():
        counts[e.type][e.user_id] += 1
    return counts


def test_edge_ranges_bound_every_users_history() -> None:
    base = dict(users=200, products=10, apps=8, events_per_user=12, seed=5)
    plain = MockGenerator(GeneratorConfig(**base))
    ranged = MockGenerator(GeneratorConfig(**base, calls_per_user=(2, 3), orders_per_user=(1, None),
                                           app_uses_per_user=(0, 1)))
    before, after = _per_user(plain), _per_user(ranged)
    users = [f"U{i:07d}" for i in range(200)]
    # without ranges some users fall outside them: the ranges have something to do
    assert any(not 2 <= before["call"][u] <= 3 for u in users)
    assert any(before["product.order"][u] == 0 for u in users)
    assert any(before["app.usage"][u] > 1 for u in users)
    assert all(2 <= after["call"][u] <= 3 for u in users)
    assert all(after["product.order"][u] >= 1 for u in users)
    assert all(after["app.usage"][u] <= 1 for u in users)
    # unbounded relations keep what was drawn
    assert after["product.click"] == before["product.click"] and after["app.click"] == before["app.click"]
    # the added events are real interactions: valid, in time order, calls to someone else
    hist = list(ranged.history_events())
    assert [e.ts for e in hist] == sorted(e.ts for e in hist)
    for e in hist:
        assert validate_event(e.to_dict()) == e
        assert e.type != "call" or e.target_id != e.user_id
    assert ranged.dataset_size() == len(list(ranged.dataset()))
    # another dataset: its own event ids; the same ranges again: the same bytes
    assert ranged.tag != plain.tag
    again = MockGenerator(GeneratorConfig(**base, calls_per_user=[2, 3], orders_per_user={"min": 1, "max": None},
                                          app_uses_per_user=(0, 1)))
    assert digest(again) == digest(ranged)


def test_edge_ranges_are_the_settings_ones() -> None:
    from config.generator import EDGE_RANGE_FIELDS
    from config.settings import Settings

    assert tuple(EDGE_RANGES) == EDGE_RANGE_FIELDS
    assert set(EDGE_RANGES.values()) == {t for t, _ in TYPE_MIX}  # one range per interaction type
    s = Settings(calls_per_user="2:5", orders_per_user={"min": 1, "max": None})
    cfg = GeneratorConfig.from_settings(s)
    assert cfg.calls_per_user == (2, 5) and cfg.orders_per_user == (1, None) and cfg.app_clicks_per_user == NO_LIMIT


def test_bad_edge_ranges_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"calls_per_user min \(5\) must be <= max \(2\)"):
        GeneratorConfig(calls_per_user=(5, 2))
    with pytest.raises(ValueError, match=r"orders_per_user min must be a whole number within \[0, 10000\]"):
        GeneratorConfig(orders_per_user=(-1, None))
    with pytest.raises(ValueError, match="app_clicks_per_user must be a \\(min, max\\) pair"):
        GeneratorConfig(app_clicks_per_user=(1, 2, 3))


def test_the_history_time_order_is_the_stable_sort_of_the_times() -> None:
    """The history's order (a sort of one int64 key per event) is numpy's stable argsort of its times:
    ties keep the draw order, and times not rounded to the millisecond still sort right."""
    from dataflow.generator import _time_order

    rng = np.random.default_rng(1)
    ts = np.round(1.76e9 + rng.integers(0, 500, size=20_000) * 0.001, 3)  # many ties
    np.testing.assert_array_equal(_time_order(ts), np.argsort(ts, kind="stable"))
    raw = 1.76e9 + rng.random(5_000)  # sub-millisecond differences
    np.testing.assert_array_equal(_time_order(raw), np.argsort(raw, kind="stable"))
    assert _time_order(np.array([5.0])).tolist() == [0]


def test_the_dataset_size_is_known_before_the_history_is_drawn() -> None:
    gen = MockGenerator(GeneratorConfig(users=500, events_per_user=9, seed=2))
    size = gen.dataset_size()
    assert gen._hist is None
    assert size == len(list(gen.dataset())) == sum(len(b) for b in MockGenerator(gen.cfg).dataset_columns(1_000))
