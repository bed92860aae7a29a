"""The bulk (columnar) profile fold gives the profiles the Bytewax replay gives."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from dataflow.bootstrap import append_dataset
from dataflow.bulk_fold import bulk_fold
from dataflow.control import PROFILES_CHECKPOINT
from dataflow.generator import MockGenerator
from dataflow.runner import replay
from storage.event_store import EventStore
from storage.events import Event


def profile_rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT user_id, profile, last_seq FROM profiles ORDER BY user_id").fetchall()


def test_bulk_fold_equals_the_replay(tmp_path: Path, small_gen: MockGenerator) -> None:
    db = tmp_path / "a.db"
    with EventStore(db) as store:
        append_dataset(store, small_gen, 2000)
        store.append(small_gen.live_chunk(0, 1.8e9, 500.0)[:600])  # live events, sign-ups among them
        store.append([
            # an update wins over the registration; an older-ts event later in the log still counts by seq
            Event("x1", "user.updated", 1.0, "U0000003", None, {"plan_type": "5G尊享套餐", "monthly_fee": 301.5}),
            # a user never registered, a payload with more than one field, a call without a duration
            Event("x2", "call", 1.9e9, "U9999999", "U0000001", {"duration": 12.25, "note": "漫游"}),
            Event("x3", "call", 1.9e9, "U0000001", "U9999999", {}),
            Event("x4", "product.order", 1.9e9, "U0000001", "P00001", {"amount": 0.125}),
            Event("x5", "label.observed", 1.9e9, "U0000001", None, {"label": "churn", "value": 1}),
        ])
    copy = tmp_path / "b.db"
    shutil.copy(db, copy)
    summary = replay(Settings(db=db), from_seq=1)
    with EventStore(copy) as store:
        bulk = bulk_fold(store)
        assert store.checkpoints.get(PROFILES_CHECKPOINT) == store.last_seq() == bulk.last_seq
    assert bulk.profiles == summary.profiles > 300
    assert profile_rows(copy) == profile_rows(db)
    # the rows say what a user would check
    with EventStore(copy) as store:
        p = store.profiles.get("U0000003")
        assert p is not None and p["plan_type"] == "5G尊享套餐" and p["monthly_fee"] == 301.5
        assert store.profiles.get("U9999999")["registered"] is False  # type: ignore[index]


def test_bulk_fold_refuses_a_store_already_folded(tmp_path: Path, small_gen: MockGenerator) -> None:
    db = tmp_path / "a.db"
    with EventStore(db) as store:
        append_dataset(store, small_gen, 5000)
        bulk_fold(store)
        with pytest.raises(ValueError, match="empty profiles only"):
            bulk_fold(store)


@pytest.mark.parametrize("fold_chunk", [3_000, 500_000])
def test_the_fold_made_while_generating_equals_the_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         fold_chunk: int) -> None:
    """``ups init`` folds the profiles from the dataset's columns as they are appended (the log is not read
    back), a chunk of events at a time: the profiles are the replay's of the same log."""
    from dataflow import bulk_fold as module
    from dataflow.prepare import generate_if_empty, project

    monkeypatch.setattr(module, "FOLD_CHUNK", fold_chunk)
    settings = Settings(db=tmp_path / "a.db", users=400)
    generated = generate_if_empty(settings, lambda f, m: None)
    assert generated.fold is not None and generated.appended > 5000
    copy = tmp_path / "b.db"
    shutil.copy(settings.db, copy)
    assert project(settings, lambda f, m: None, generated.fold) == generated.fold.events
    replay(Settings(db=copy), from_seq=1)
    assert profile_rows(settings.db) == profile_rows(copy) and len(profile_rows(copy)) == 400
    with EventStore(settings.db) as store:
        assert store.checkpoints.get(PROFILES_CHECKPOINT) == store.last_seq()


def test_a_generation_another_writer_came_between_reads_the_log_back(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An event appended by another writer while the dataset is written moves the dataset's seqs: no
    in-memory fold then, the log is read back, and the profiles are still the replay's."""
    from dataflow.bulk_fold import ProfileFold
    from dataflow.prepare import generate_if_empty, project

    settings = Settings(db=tmp_path / "a.db", users=300)
    plain = ProfileFold.add_appended
    batches = []

    def meanwhile(self: ProfileFold, cols: Any, first_seq: int) -> None:
        plain(self, cols, first_seq)
        batches.append(len(cols))
        if len(batches) == 1:  # after the first batch
            with EventStore(settings.db) as other:
                other.append([Event("x1", "call", 1.9e9, "U0000001", "U0000002", {"duration": 1.5})])

    monkeypatch.setattr(ProfileFold, "add_appended", meanwhile)
    generated = generate_if_empty(settings, lambda f, m: None)
    assert generated.appended > 0 and generated.fold is None
    copy = tmp_path / "b.db"
    shutil.copy(settings.db, copy)
    project(settings, lambda f, m: None, generated.fold)
    replay(Settings(db=copy), from_seq=1)
    assert profile_rows(settings.db) == profile_rows(copy)
