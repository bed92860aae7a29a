"""How ``ups init`` trains its initial HGT on a base of any size: on at least 20 % of the users, with a
step's cost that does not grow with the base (a large one trains by METIS partitions)."""

from __future__ import annotations

import math

from config.settings import Settings
from dataflow.prepare import initial_train_plan


def test_a_small_base_trains_on_all_of_it_full_batch() -> None:
    plan = initial_train_plan(Settings(), 2000)
    assert plan.share == 1.0 and plan.mode is None and plan.epochs == Settings().bootstrap_epochs


def test_the_sample_covers_a_fifth_of_a_large_base_in_partition_sized_steps() -> None:
    s = Settings()
    at_100k, at_1m = initial_train_plan(s, 100_000), initial_train_plan(s, 1_000_000)
    assert at_100k.share == at_1m.share == 0.2
    assert at_100k.mode is None and at_100k.epochs == s.bootstrap_epochs  # 20 000 users, full batch
    # 200 000 users by METIS partitions, one optimiser step each, every partition once per epoch: each
    # step costs about what a full-batch step over the 100k base's sample does
    assert at_1m.mode == "metis" and at_1m.epochs == s.bootstrap_epochs
    steps = math.ceil(at_1m.share * 1_000_000 / s.train_metis_part_users)
    assert steps == 10 and s.train_metis_part_users <= s.bootstrap_train_users
