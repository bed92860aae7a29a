"""Ids coded in order of first appearance, the same whichever way a lookup goes (dict or hash index)."""

from __future__ import annotations

import numpy as np

from storage.id_codes import LARGE, IdCodes


def _reference(batches: list[list[str]]) -> list[list[int]]:
    seen: dict[str, int] = {}
    return [[seen.setdefault(v, len(seen)) for v in batch] for batch in batches]


def test_codes_follow_first_appearance_through_small_and_large_lookups() -> None:
    rng = np.random.default_rng(0)
    pool = [f"U{i:07d}" for i in range(3 * LARGE)]
    # small batches, then large ones that add ids (the index stale) and that add none (the index current)
    sizes = [5, 300, LARGE, 2 * LARGE, 3 * LARGE, 3 * LARGE, 7, 4 * LARGE]
    batches = [[pool[i] for i in rng.integers(0, min(len(pool), 50 + k * LARGE), n)] for k, n in enumerate(sizes)]
    codes = IdCodes()
    got = []
    for batch in batches:
        coded = codes.add(np.asarray(batch, dtype=object))
        assert coded is not None
        got.append(coded[0].tolist())
    assert got == _reference(batches)
    assert codes.ids == list(dict.fromkeys(v for b in batches for v in b))
    assert codes.get(batches[0][0]) == 0 and codes.get("nobody") is None


def test_a_missing_id_adds_nothing() -> None:
    codes = IdCodes()
    codes.extend(["a", "b"])
    assert codes.add(np.asarray(["c", None, "a"] * LARGE, dtype=object)) is None
    assert codes.add(np.asarray(["c", None, "a"], dtype=object)) is None
    assert codes.add(np.asarray(["c", float("nan")], dtype=object)) is None
    assert codes.ids == ["a", "b"]
    found, new = codes.add(np.asarray(["b", "c"], dtype=object)) or (None, None)
    assert found is not None and found.tolist() == [1, 2] and new == ["c"]
