"""Make a database ready to serve: the default dataset when it is empty, its projections, and a small
initial model (HGT, embeddings, fusion) when none is registered. Used by ``ups up`` and ``ups init``
(which ``data/regenerate`` runs for a new database file)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from storage import data_config
from config.settings import Settings

Progress = Callable[[float, str], None]

@dataclass
class BootstrapSummary:
    generated_events: int = 0
    projected_events: int = 0
    model: dict[str, Any] | None = None
    steps: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _span(progress: Progress, lo: float, hi: float) -> Progress:
    return lambda f, msg="": progress(lo + (hi - lo) * min(1.0, max(0.0, f)), msg)


def generate_if_empty(settings: Settings, progress: Progress) -> int:
    from dataflow.bootstrap import append_dataset
    from dataflow.generator import GeneratorConfig, MockGenerator
    from storage.event_store import EventStore

    with EventStore(settings.db) as store:
        if store.count() > 0:
            return 0
        gen = MockGenerator(GeneratorConfig.from_settings(settings))
        total = max(1, gen.dataset_size())
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            progress(done / total, f"generating {done:,}/{total:,} events")

        summary = append_dataset(store, gen, 10_000, step)
        store.append([data_config.event(data_config.of_settings(settings))])
        return summary.appended


def project(settings: Settings, progress: Progress) -> int:
    """Fold the log into the profiles the models train on (the live flow's fold, run as a replay);
    continues from the profiles checkpoint, so a database already folded costs nothing."""
    from dataflow.control import PROFILES_CHECKPOINT
    from dataflow.runner import replay
    from storage.event_store import EventStore
    from storage.projections import Checkpoints

    with EventStore(settings.db) as store:
        last, done = store.last_seq(), Checkpoints(store.conn).get(PROFILES_CHECKPOINT)
    if done >= last:
        return 0
    total, seen = last - done, 0

    def step(n: int) -> None:
        nonlocal seen
        seen += n
        progress(seen / total, f"folding profiles {seen:,}/{total:,}")

    return replay(settings, from_seq=done + 1, progress=step).events


def profile_count(settings: Settings) -> int:
    from storage.db import connect
    from storage.projections import Profiles

    conn = connect(settings.db)
    try:
        return Profiles(conn).count()
    finally:
        conn.close()


def has_model(settings: Settings) -> bool:
    from storage.db import connect
    from storage.projections import Models

    conn = connect(settings.db)
    try:
        m = Models(conn)
        return m.latest_version("hgt") is not None and m.latest_version("fusion") is not None
    finally:
        conn.close()


def prepare(settings: Settings, progress: Progress) -> BootstrapSummary:
    from api.job_tasks import initial_model

    t0 = time.time()
    out = BootstrapSummary()
    out.generated_events = generate_if_empty(settings, _span(progress, 0.0, 0.25))
    if out.generated_events:
        out.steps.append(f"generated {out.generated_events:,} events")
    out.projected_events = project(settings, _span(progress, 0.25, 0.4))
    if not has_model(settings):
        users = profile_count(settings)
        ratio = min(1.0, settings.bootstrap_train_users / users) if users else 1.0
        out.model = initial_model(
            settings, _span(progress, 0.4, 1.0),
            epochs=settings.bootstrap_epochs, fusion_epochs=settings.bootstrap_fusion_epochs, train_ratio=ratio,
        )
        out.steps.append(f"trained the initial model (HGT on {ratio:.0%} of {users:,} users, embeddings for all)")
    progress(1.0, "ready")
    out.seconds = round(time.time() - t0, 3)
    return out
