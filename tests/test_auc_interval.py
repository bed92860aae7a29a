"""The held-out link AUC's confidence interval: DeLong's variance, checked against its definition and
by its coverage over repeated draws."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from scoring.evaluate import auc_interval


def test_the_interval_is_delongs_around_the_auc() -> None:
    rng = np.random.default_rng(3)
    pos, neg = rng.normal(0.8, 1, 40), np.round(rng.normal(0, 1, 70), 1)  # ties among the negatives
    pos[:5] = neg[:5]  # and between the classes
    # the structural components by their definition: psi(x, y) = 1 if x > y, 1/2 on a tie
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    value = psi.mean()
    var = psi.mean(1).var(ddof=1) / len(pos) + psi.mean(0).var(ddof=1) / len(neg)
    got = auc_interval(pos, neg)
    assert got is not None
    assert value == pytest.approx(roc_auc_score(np.r_[np.ones(40), np.zeros(70)], np.r_[pos, neg]), abs=1e-12)
    np.testing.assert_allclose(got, (value - 1.959964 * var ** 0.5, value + 1.959964 * var ** 0.5), rtol=1e-9)
    assert auc_interval(pos[:1], neg) is None


def test_about_95_in_100_intervals_hold_the_true_auc_and_more_pairs_narrow_it() -> None:
    rng = np.random.default_rng(7)
    truth = norm.cdf(1 / np.sqrt(2))  # positives N(1, 1) against negatives N(0, 1)
    held = 0
    for _ in range(300):
        lo, hi = auc_interval(rng.normal(1, 1, 200), rng.normal(0, 1, 600)) or (1.0, 0.0)
        held += lo <= truth <= hi
    assert 0.91 <= held / 300 <= 0.99
    narrow, wide = (auc_interval(rng.normal(1, 1, n), rng.normal(0, 1, 3 * n)) for n in (20_000, 2_000))
    assert narrow is not None and wide is not None
    assert 2.5 < (wide[1] - wide[0]) / (narrow[1] - narrow[0]) < 4.0  # ~ sqrt(10)
