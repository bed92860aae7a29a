"""The mock subscribers: latent churn propensity and base attributes, pure numpy from the seed.

The planted truth: a latent churn propensity ``z = a·e_user + b·c_community`` drives behaviour.

* ``e_user`` (individual) lowers the monthly fee, the tenure and the activity: visible to simple rules.
* ``c_community`` is shared by a call-graph community (85 % of calls stay inside it) and raises the
  use of competitor-carrier apps: visible only through the graph (neighbours, apps used).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
from faker import Faker

from .generator_config import GeneratorConfig
from .mock_catalogue import BRANDS, LEVELS, PLANS, segment_of

#: distinct Faker names drawn; users pick theirs from this pool (a Faker call per user would cost
#: seconds per 100 000 users)
NAME_POOL = 5_000


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class Population:
    """Latent and base attributes of users."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        self.cfg = cfg
        n = cfg.users
        rng = np.random.default_rng([cfg.seed, 1])
        n_comm = cfg.communities
        self.community = rng.integers(0, n_comm, size=n)
        self.c_comm = rng.normal(size=n_comm)
        self.e_user = rng.normal(size=n)
        c = self.c_comm[self.community]
        self.churn_logit = 1.4 * self.e_user + 1.4 * c - 1.0
        self.churn_p = _sigmoid(self.churn_logit)
        self.churn = (rng.random(n) < self.churn_p).astype(np.int8)
        self.labelled = rng.random(n) < cfg.label_share
        # rule-visible: cheaper plans, lower fee, shorter tenure, lower activity with higher e_user
        plan_score = -0.9 * self.e_user + rng.normal(scale=0.8, size=n)
        cuts = np.quantile(plan_score, [0.2, 0.35, 0.45, 0.75, 0.9])
        order = [2, 0, 1, 3, 5, 4]  # 校园, 4G基础, 4G畅享, 5G畅享, 家庭, 5G尊享: cheap → dear
        self.plan = np.array(order)[np.searchsorted(cuts, plan_score)]
        base_fee = np.array([f for _, f in PLANS])[self.plan]
        self.monthly_fee = np.round(
            np.clip(base_fee * np.exp(-0.25 * self.e_user + rng.normal(scale=0.2, size=n)), 8, 999), 2
        )
        self.tenure = np.clip(
            np.round(rng.gamma(2.0, 14.0, size=n) * np.exp(-0.55 * self.e_user)), 0, 240
        ).astype(int)
        self.level = np.clip(
            np.round(self.tenure / 30 + self.monthly_fee / 150 + rng.normal(scale=0.7, size=n)), 0, len(LEVELS) - 1
        ).astype(int)
        self.brand = rng.integers(0, len(BRANDS), size=n)
        self.age = np.clip(np.round(rng.normal(36, 12, size=n)), 16, 85).astype(int)
        self.gender = rng.integers(0, 2, size=n)
        act = np.exp(-0.6 * self.e_user + rng.normal(scale=0.4, size=n))
        self.activity = act / act.mean()
        # graph-only: competitor-app affinity follows the community, not the user's own features
        self.risk_app_p = _sigmoid(2.2 * c - 2.0)
        # call partners: members of each community, contiguous after a stable sort
        self.by_comm = np.argsort(self.community, kind="stable")
        sizes = np.bincount(self.community, minlength=n_comm)
        self.comm_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.comm_size = sizes
        #: the customer segment products are chosen by (plan x fee band x age band)
        self.segment = segment_of(self.plan, self.monthly_fee, self.age)

    @cached_property
    def names_and_cities(self) -> tuple[np.ndarray, np.ndarray]:
        """Each user's name and city (object arrays), drawn from pools of Faker values."""
        fake = Faker(self.cfg.locale)
        fake.seed_instance(self.cfg.seed)
        names = np.array([fake.name() for _ in range(min(self.cfg.users, NAME_POOL))], dtype=object)
        cities = np.array([fake.city() for _ in range(min(self.cfg.users, 300))], dtype=object)
        rng = np.random.default_rng([self.cfg.seed, 2])
        pick_city = rng.integers(0, len(cities), size=self.cfg.users)
        pick_name = rng.integers(0, len(names), size=self.cfg.users)
        return names[pick_name], cities[pick_city]

    def attribute_columns(self, lo: int, hi: int) -> dict[str, list[Any]]:
        """The base attributes of users ``lo..hi-1``, a list per attribute (plain Python values)."""
        names, cities = self.names_and_cities
        return {
            "name": names[lo:hi].tolist(),
            "gender": np.array(["M", "F"], dtype=object)[self.gender[lo:hi]].tolist(),
            "age": self.age[lo:hi].tolist(),
            "city": cities[lo:hi].tolist(),
            "plan_type": np.array([p for p, _ in PLANS], dtype=object)[self.plan[lo:hi]].tolist(),
            "level": np.array(LEVELS, dtype=object)[self.level[lo:hi]].tolist(),
            "device_brand": np.array(BRANDS, dtype=object)[self.brand[lo:hi]].tolist(),
            "monthly_fee": self.monthly_fee[lo:hi].tolist(),
            "tenure_months": self.tenure[lo:hi].tolist(),
        }

    def attributes(self, i: int) -> dict[str, Any]:
        cols = self.attribute_columns(i, i + 1)
        return {k: v[0] for k, v in cols.items()}
