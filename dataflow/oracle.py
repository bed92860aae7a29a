"""The oracle for fusion training: each user's retention probability as the mock generator drew it.

The generator is deterministic for a config, and the store records the config its dataset was generated
with (``ops.data_config``), so the latent propensity can be recomputed instead of stored. It is checked
against the log: the registration event ids carry the config's tag (which includes the generator
version), so a dataset of another config or generator version gets no oracle rather than a wrong one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from storage import data_config
from storage.event_store import EventStore

from .generator import GeneratorConfig, Population, user_id

Oracle = Callable[[Sequence[str]], np.ndarray]


def generator_config(store: EventStore) -> GeneratorConfig | None:
    """The config the store's dataset was generated with, if recorded and matching the log."""
    recorded = data_config.in_effect(store.conn)
    if recorded is None:
        return None
    try:
        cfg = GeneratorConfig(**{k: v for k, v in recorded.items() if k in GeneratorConfig.__dataclass_fields__})
    except (TypeError, ValueError):
        return None
    return cfg if store.get(f"{cfg.tag}-r{user_id(0)}") is not None else None


def retention_oracle(db: str | Path) -> Oracle | None:
    """P(retained) per user id, NaN for users the generator did not draw (live sign-ups, other data);
    None when the store's dataset cannot be regenerated (no record, or another generator version)."""
    with EventStore(db, readonly=True) as store:
        cfg = generator_config(store)
    if cfg is None:
        return None
    retained = 1.0 - Population(cfg).churn_p
    index = {user_id(i): i for i in range(cfg.users)}

    def oracle(user_ids: Sequence[str]) -> np.ndarray:
        return np.array([retained[index[u]] if u in index else np.nan for u in user_ids], dtype=np.float64)

    return oracle
