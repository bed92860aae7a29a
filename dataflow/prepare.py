"""Make a database ready to serve: the default dataset when it is empty, its projections, and a small
initial model (HGT, embeddings, fusion) when none is registered. Used by ``ups up``, ``ups init`` and
the ``data.regenerate`` job (:func:`regenerate`: a fresh dataset and model in a new database)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from pydantic import ConfigDict, with_config

from config.db_location import DbLocation, PostgresUrl
from config.progress import Progress, part, stage
from config.settings import Settings
from scoring.operation_results import JobTiming
from storage import data_config

if TYPE_CHECKING:
    from scoring.operation_results import InitialModel, ModelUpgraded
    from storage.columns import NewEvents

    from .bulk_fold import ProfileFold


@dataclass
class PrepareSummary:
    generated_events: int = 0
    projected_events: int = 0
    model: InitialModel | None = None
    upgraded: ModelUpgraded | None = None
    steps: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Generated:
    """What a generation appended, and the profiles folded from it in memory when the log gave its
    events exactly the seqs assumed (``None``: the projection reads the log back)."""

    appended: int = 0
    fold: ProfileFold | None = None


def generate_if_empty(settings: Settings, progress: Progress) -> Generated:
    from storage import open_store

    from .bootstrap import append_dataset
    from .bulk_fold import ProfileFold
    from .generator import GeneratorConfig, MockGenerator

    with open_store(settings.db) as store:
        if store.count() > 0:
            return Generated()
        gen = MockGenerator(GeneratorConfig.from_settings(settings))
        total = max(1, gen.dataset_size())
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            progress(done / total, f"{done:,}/{total:,} events")

        # the profiles are folded from the columns as they are appended (the log is not read back)
        fold = ProfileFold()
        first = next_seq = store.last_seq() + 1

        def appended(batch: NewEvents) -> None:
            nonlocal next_seq
            fold.add_appended(batch, next_seq)
            next_seq += len(batch)

        summary = append_dataset(store, gen, 50_000, step, appended)
        store.append([data_config.event(data_config.of_settings(settings))])
        # the fold holds when the log gave the dataset the seqs first, first + 1, …: nothing was already
        # there, no other writer came between, no seq was skipped; the data config event has no user
        last = store.last_seq()
        exact = summary.duplicates == 0 and last == next_seq and store.count() == last - first + 1
        fold.upto = last
        return Generated(summary.appended, fold if exact else None)


def project(settings: Settings, progress: Progress, folded: ProfileFold | None = None) -> int:
    """Fold the log into the profiles the models train on: a fresh database (no profiles yet, no rule
    events) by the bulk fold, which gives the replay's profiles at numpy speed (``folded``: the fold
    already made of the whole log as it was generated, written as it is); otherwise the live flow's
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
            if folded is not None and folded.upto == last:
                return folded.write(store, last, lambda k, n: progress(k / n, f"{k:,}/{n:,} profiles")).events
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


@dataclass
class TrainPlan:
    """How the initial HGT trains: on this share of the users, for these epochs, in this mode (None:
    the settings' ``train_mode``)."""

    share: float
    epochs: int
    mode: str | None = None


def initial_train_plan(settings: Settings, users: int) -> TrainPlan:
    """On :func:`initial_train_share` of the users; a sample well past ``bootstrap_train_users`` users
    (the share's floor on a large base) trains by METIS partitions of ``train_metis_part_users`` users,
    one optimiser step each, ``bootstrap_epochs`` passes over every partition: at 1M users 200 000 users
    in 30 steps, where full-batch epochs over all of them cost ten times the whole budget. One pass (ten
    steps) left the held-out link AUCs of four edge types below 100k users' (user-clicks-app by 0.008,
    beyond the held-out sample's noise); three cost about 80 CPU-s more and put every type above."""
    share = initial_train_share(settings, users)
    sampled = share * users
    if sampled <= 1.5 * settings.bootstrap_train_users:
        return TrainPlan(share, settings.bootstrap_epochs)
    return TrainPlan(share, settings.bootstrap_epochs, "metis")


def prepare(settings: Settings, progress: Progress, say: Callable[[str], None] | None = None) -> PrepareSummary:
    """Generate, fold and train what is missing; a model registered by an older UPS is brought up to
    date (``say`` is told why first: it takes a while)."""
    from scoring.orchestration import initial_model, outdated_model, upgrade_model

    from .oracle import retention_oracle

    t0 = time.time()
    out = PrepareSummary()
    generated = generate_if_empty(settings, stage(progress, "generate", 0.0, 0.25))
    out.generated_events = generated.appended
    if out.generated_events:
        out.steps.append(f"generated {out.generated_events:,} events")
    out.projected_events = project(settings, stage(progress, "fold", 0.25, 0.4), generated.fold)
    if not has_model(settings):
        users = profile_count(settings)
        plan = initial_train_plan(settings, users)
        out.model = initial_model(
            settings, part(progress, 0.4, 1.0),
            epochs=plan.epochs, fusion_epochs=settings.bootstrap_fusion_epochs, train_ratio=plan.share,
            train_mode=plan.mode, oracle=retention_oracle(settings.db, settings),
        )
        out.steps.append(f"trained the initial model (HGT on {plan.share:.0%} of {users:,} users, embeddings for all)")
    elif (outdated := outdated_model(settings)) is not None:
        doing, done = (("re-embedding every node and retraining the fusion", "re-embedded every node and retrained the fusion")
                       if outdated.reembed else ("retraining the fusion", "retrained the fusion"))
        why = "; ".join(outdated.reasons)
        if say is not None:
            say(f"the model in {settings.db} predates this UPS ({why}): {doing}")
        out.upgraded = upgrade_model(settings, part(progress, 0.4, 1.0), outdated, oracle=retention_oracle(settings.db, settings))
        out.steps.append(f"{done} for this UPS ({why})")
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
