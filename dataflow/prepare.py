"""Make a database ready to serve: the default dataset when it is empty, its projections, and a small
initial model (HGT, embeddings, fusion) when none is registered. Used by ``ups up``, ``ups init`` and
the ``data.regenerate`` job (:func:`regenerate`: a fresh dataset and model in a new database)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, with_config

from config.db_location import DbLocation, PostgresUrl
from config.progress import Progress, part, stage
from config.settings import Settings
from scoring.operation_results import JobTiming
from storage import data_config

if TYPE_CHECKING:
    from scoring.operation_results import InitialModel


@dataclass
class PrepareSummary:
    generated_events: int = 0
    projected_events: int = 0
    model: InitialModel | None = None
    steps: list[str] = field(default_factory=list)
    seconds: float = 0.0


def generate_if_empty(settings: Settings, progress: Progress) -> int:
    from storage import open_store

    from .bootstrap import append_dataset
    from .generator import GeneratorConfig, MockGenerator

    with open_store(settings.db) as store:
        if store.count() > 0:
            return 0
        gen = MockGenerator(GeneratorConfig.from_settings(settings))
        total = max(1, gen.dataset_size())
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            progress(done / total, f"{done:,}/{total:,} events")

        summary = append_dataset(store, gen, 50_000, step)
        store.append([data_config.event(data_config.of_settings(settings))])
        return summary.appended


def project(settings: Settings, progress: Progress) -> int:
    """Fold the log into the profiles the models train on: a fresh database (no profiles yet, no rule
    events) by the bulk fold, which gives the replay's profiles at numpy speed; otherwise the live flow's
    fold, run as a replay, from the profiles checkpoint (a database already folded costs nothing)."""
    from storage import open_store

    from .bulk_fold import bulk_fold
    from .control import PROFILES_CHECKPOINT
    from .runner import holding_store, replay

    with holding_store(settings, role="replay"), open_store(settings.db) as store:
        last, done = store.last_seq(), store.checkpoints.get(PROFILES_CHECKPOINT)
        if done >= last:
            return 0
        total, seen = last - done, 0

        def step(n: int) -> None:
            nonlocal seen
            seen += n
            progress(seen / total, f"{seen:,}/{total:,} events")

        fresh = done == 0 and store.profiles.count() == 0
        if fresh and not any(t.startswith("rule.") for t in store.counts_by_type()):
            return bulk_fold(store, step).events
    return replay(settings, from_seq=done + 1, progress=step).events


def profile_count(settings: Settings) -> int:
    from storage import open_store

    with open_store(settings.db) as store:
        return store.profiles.count()


def has_model(settings: Settings) -> bool:
    from storage import open_store

    with open_store(settings.db) as store:
        m = store.models
        return m.latest_version("hgt") is not None and m.latest_version("fusion") is not None


def initial_train_share(settings: Settings, users: int) -> float:
    """Share of the users the initial HGT trains on: about ``bootstrap_train_users`` of them, but at
    least ``bootstrap_train_share`` (and all of a small base)."""
    if not users:
        return 1.0
    return min(1.0, max(settings.bootstrap_train_users / users, settings.bootstrap_train_share))


def prepare(settings: Settings, progress: Progress) -> PrepareSummary:
    from scoring.orchestration import initial_model

    from .oracle import retention_oracle

    t0 = time.time()
    out = PrepareSummary()
    out.generated_events = generate_if_empty(settings, stage(progress, "generate", 0.0, 0.25))
    if out.generated_events:
        out.steps.append(f"generated {out.generated_events:,} events")
    out.projected_events = project(settings, stage(progress, "fold", 0.25, 0.4))
    if not has_model(settings):
        users = profile_count(settings)
        ratio = initial_train_share(settings, users)
        out.model = initial_model(
            settings, part(progress, 0.4, 1.0),
            epochs=settings.bootstrap_epochs, fusion_epochs=settings.bootstrap_fusion_epochs, train_ratio=ratio,
            oracle=retention_oracle(settings.db, settings),
        )
        out.steps.append(f"trained the initial model (HGT on {ratio:.0%} of {users:,} users, embeddings for all)")
    progress(1.0, "ready")
    out.seconds = round(time.time() - t0, 3)
    return out


def next_db(current: DbLocation) -> DbLocation:
    """Where a regenerate writes: ``ups.db`` → ``ups.gen2.db`` → ``ups.gen3.db`` …, a new file beside
    the current one; on PostgreSQL ``ups`` → ``ups_gen2`` …, a new database on the same server, created
    here (the current one's role needs CREATEDB)."""
    if isinstance(current, PostgresUrl):
        from storage.pg_db import create_next_database

        base, _, num = current.database.rpartition("_gen")
        stem, n = (base, int(num) + 1) if base and num.isdigit() else (current.database, 2)
        while (made := create_next_database(current, f"{stem}_gen{n}")) is None:
            n += 1
        return made
    stem, n = current.stem, 2
    base, _, num = stem.rpartition(".gen")
    if base and num.isdigit():
        stem, n = base, int(num) + 1
    while (p := current.with_name(f"{stem}.gen{n}{current.suffix}")).exists():
        n += 1
    return p


@with_config(ConfigDict(extra="allow"))
class Regenerated(JobTiming):
    """A ``data.regenerate`` job's result: the new database, the old one, the configuration and what was done."""

    db: str
    previous_db: str
    config: dict[str, Any]
    steps: list[str]
    generated_events: int
    seconds: float
    duration_s: float


def regenerate(settings: Settings, params: dict[str, Any], progress: Progress) -> Regenerated:
    """A fresh dataset of the generator configuration ``params["config"]`` and an initial model, in a new
    database beside the current one (:func:`next_db`; the API switches to it afterwards); the current one
    is kept."""
    t0 = time.time()
    target = next_db(settings.db)
    config = {k: v for k, v in params["config"].items() if k in data_config.FIELDS}
    fresh = Settings.model_validate({**settings.model_dump(), **config, "db": target})
    summary = prepare(fresh, progress)
    return Regenerated(db=str(target), previous_db=str(settings.db), config=params["config"], steps=summary.steps,
                       generated_events=summary.generated_events, seconds=summary.seconds,
                       duration_s=round(time.time() - t0, 3))
