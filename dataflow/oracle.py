"""The oracle for fusion training: each user's retention probability as the mock generator drew it.

The generator is deterministic for a config, and the store records the config its dataset was generated
with (``ops.data_config``), so the latent propensity can be recomputed instead of stored. It is checked
against the log: the registration event ids carry the config's tag (which includes the generator
version), so a dataset of another config or generator version gets no oracle rather than a wrong one.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from config.db_location import DbLocation
from storage import data_config
from storage import Store, open_store

from .generator import GeneratorConfig, Population, user_id

Oracle = Callable[[Sequence[str]], np.ndarray]


def generator_config(store: Store, settings: Any = None) -> GeneratorConfig | None:
    """The config the store's dataset was generated with, if it matches the log: the recorded one
    (``ups up``, the API), else the settings' (``ups generate`` records none)."""
    recorded = data_config.in_effect(store)
    candidates = []
    try:
        if recorded is not None:
            candidates.append(GeneratorConfig(**{k: v for k, v in recorded.items()
                                                 if k in GeneratorConfig.__dataclass_fields__}))
        if settings is not None:
            candidates.append(GeneratorConfig.from_settings(settings))
    except (TypeError, ValueError):
        pass  # a record this version cannot read: no oracle rather than a wrong one
    return next((c for c in candidates if store.get(f"{c.tag}-r{user_id(0)}") is not None), None)


def retention_oracle(db: DbLocation | str, settings: Any = None) -> Oracle | None:
    """P(retained) per user id, NaN for users the generator did not draw (live sign-ups, other data);
    None when the store's dataset cannot be regenerated (another config or generator version)."""
    with open_store(db, readonly=True) as store:
        cfg = generator_config(store, settings)
    if cfg is None:
        return None
    retained = 1.0 - Population(cfg).churn_p
    index = {user_id(i): i for i in range(cfg.users)}

    def oracle(user_ids: Sequence[str]) -> np.ndarray:
        return np.array([retained[index[u]] if u in index else np.nan for u in user_ids], dtype=np.float64)

    return oracle
