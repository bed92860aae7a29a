"""Embeddings written in blocks: what is read back is what was written, in whatever order the ids come."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from storage.event_store import EventStore
from storage.embeddings import Embeddings


def test_a_block_reads_back_row_by_row_and_a_new_version_replaces_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    ids = [f"U{i:05d}" for i in rng.permutation(500)]
    with EventStore(tmp_path / "e.db") as store:
        for version in (1, 2):
            vectors = rng.standard_normal((500, 16)).astype(np.float32)
            seqs = rng.integers(1, 10_000, 500)
            with store.transaction() as conn:
                assert Embeddings(conn).put_block("user", ids, vectors, version, seqs) == 500
            emb = Embeddings(store.conn)
            assert emb.count("user") == 500
            for i in (0, 17, 499):
                row = emb.get("user", ids[i])
                assert row is not None
                assert np.array_equal(row.vector, vectors[i]) and row.model_version == version and row.seq == seqs[i]
            got = emb.get_many("user", ids[:50])
            assert all(np.array_equal(got[nid], vectors[i]) for i, nid in enumerate(ids[:50]))


def test_a_block_whose_parts_disagree_is_refused(tmp_path: Path) -> None:
    with EventStore(tmp_path / "e.db") as store:
        with pytest.raises(ValueError, match="3 ids, 2 seqs"):
            Embeddings(store.conn).put_block("user", ["a", "b", "c"], np.zeros((3, 4), np.float32), 1, np.zeros(2))
        with pytest.raises(ValueError, match="shape"):
            Embeddings(store.conn).put_block("user", ["a", "b"], np.zeros((3, 4), np.float32), 1, np.zeros(2))
        assert Embeddings(store.conn).count() == 0


@pytest.mark.parametrize("odd", ['quo"te', "back\\slash", "tab\there", "ünï©ødé 🙂", "nul\x00inside", "\\u0000"])
def test_a_block_keeps_any_id_as_given_and_the_last_of_a_repeated_id_wins(tmp_path: Path, odd: str) -> None:
    ids = ["a", odd, "b", odd]
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    with EventStore(tmp_path / "e.db") as store:
        with store.transaction() as conn:
            Embeddings(conn).put_block("user", ids, vectors, 1, np.array([1, 2, 3, -4]))
        emb = Embeddings(store.conn)
        assert emb.count("user") == 3
        row = emb.get("user", odd)
        assert row is not None and row.node_id == odd
        assert np.array_equal(row.vector, vectors[3]) and row.seq == -4
        b = emb.get("user", "b")
        assert b is not None and np.array_equal(b.vector, vectors[2]) and b.seq == 3


def test_user_lags_time_each_event_from_its_append_to_the_row_that_reflects_it(tmp_path: Path) -> None:
    from storage import Event

    def call(i: int, user: str) -> Event:
        return Event(f"e{i}", "call", 1000.0 + i, user, "B", {"duration": 1.0})

    vec = np.zeros(4, np.float32)
    with EventStore(tmp_path / "e.db") as store:
        store.append([call(1, "A")])  # before the window
        after = store.last_seq()
        store.append([call(2, "A"), call(3, "B"), call(4, "C"), call(5, "D"), call(6, "D")])
        store.append([Event("e7", "user.updated", 1007.0, "E", None, {"plan": "x"})])  # not a type asked for
        upto = store.last_seq()
        store.append([call(8, "B")])  # past the window: B's row may reflect this one, so B is left out
        with store.transaction() as conn:
            # A's row reflects its event (seq 2); C's is older than its event (seq 4): not embedded yet
            Embeddings(conn).put_many([("user", "A", vec, 1, 2), ("user", "C", vec, 1, 1), ("user", "D", vec, 1, 6)])
        lags = Embeddings(store.conn).user_lags(after, upto, ["call"])
        # A embedded, C pending; D (two events) and B (one later) are left out; E's type was not asked
        assert len(lags.recorded_at) == 2
        assert len(lags.seconds) == 1 and 0 <= lags.seconds[0] < 60
        assert len(lags.pending_ages(lags.recorded_at.max() + 5.0)) == 1
        assert Embeddings(store.conn).user_lags(upto, upto, ["call"]).recorded_at.size == 0
