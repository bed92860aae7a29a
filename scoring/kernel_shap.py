"""Kernel SHAP of one row, every coalition evaluated in a single batched model call.

The estimator is shap's ``KernelExplainer`` (Lundberg & Lee 2017): the coalitions of each size are
enumerated while the budget covers all of them (smallest and largest sizes first, each with its
complement), the rest are drawn from the Shapley kernel's size distribution in complementary pairs,
repeats merged, and the values come from the kernel-weighted least squares with the efficiency
constraint, so ``base + Σ φ = f(x)`` holds exactly. It is written out here because shap builds the
coalition rows one at a time in Python (``addsample``): for a model as cheap as the fusion that
bookkeeping was most of an explanation's time. Here the coalition masks are one boolean matrix and
their rows one ``np.where`` against the background. ``tests/test_explain.py`` checks the values equal
shap's where both enumerate every coalition.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import comb
from typing import Callable, Sequence

import numpy as np

Model = Callable[[np.ndarray], np.ndarray]
Masked = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, slots=True)
class KernelShapResult:
    phi: np.ndarray  # one value per player (feature or group)
    base_value: float  # mean model output over the background
    prediction: float  # model output at the explained row
    exact: bool  # every coalition was evaluated: the values are the exact Shapley values
    coalitions: int  # coalitions evaluated (besides the empty and the full one)


def _combinations(m: int, size: int) -> np.ndarray:
    """Every coalition of ``size`` players out of ``m`` as boolean rows."""
    rows = np.zeros((comb(m, size), m), dtype=bool)
    for r, cols in enumerate(combinations(range(m), size)):
        rows[r, list(cols)] = True
    return rows


def coalitions(m: int, nsamples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
    """Coalition masks (rows of ``m`` booleans) and their kernel weights, chosen as shap's KernelExplainer
    chooses them for a budget of ``nsamples``; the flag says every coalition is there."""
    budget = min(nsamples, 2**m - 2) if m < 31 else nsamples
    n_sizes, n_paired = m // 2, (m - 1) // 2  # sizes 1..ceil((m-1)/2); those below m/2 pair with m - size
    sizes = np.arange(1, n_sizes + 1)
    weights = (m - 1) / (sizes * (m - sizes))
    weights[:n_paired] *= 2
    weights /= weights.sum()
    masks: list[np.ndarray] = []
    kernel: list[np.ndarray] = []
    left, remaining, full = budget, weights.copy(), 0
    for i, size in enumerate(sizes.tolist()):
        paired = i < n_paired
        n_subsets = comb(m, size) * (2 if paired else 1)
        if left * remaining[i] / n_subsets < 1.0 - 1e-8:
            break
        full += 1
        left -= n_subsets
        if remaining[i] < 1.0:
            remaining /= 1.0 - remaining[i]
        rows = _combinations(m, size)
        w = np.full(len(rows), weights[i] / comb(m, size) / (2 if paired else 1))
        masks += [rows, ~rows] if paired else [rows]
        kernel += [w, w] if paired else [w]
    exact = full == n_sizes
    if not exact and left > 0:
        rows, w = _sampled(m, weights, full, n_paired, left, rng)
        masks.append(rows)
        kernel.append(w)
    if not masks:
        return np.zeros((0, m), dtype=bool), np.zeros(0), exact
    return np.concatenate(masks), np.concatenate(kernel), exact


def _sampled(m: int, weights: np.ndarray, full: int, n_paired: int, budget: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The coalitions of the sizes not enumerated: a size drawn by its kernel weight, a random coalition of
    that size and its complement; a repeat adds to the weights of its first draw. The weights are then
    scaled to the kernel weight those sizes hold."""
    p = weights.copy()
    p[:n_paired] /= 2  # a paired size's draw adds two coalitions
    p = p[full:] / p[full:].sum()
    for draws in (budget, 4 * budget):  # rarely are more than `budget` draws needed: repeats cost nothing
        size = rng.choice(len(p), size=draws, p=p) + full + 1
        order = np.argsort(rng.random((draws, m)), axis=1)  # a random order of the players per draw
        drawn = np.zeros((draws, m), dtype=bool)
        np.put_along_axis(drawn, order, np.arange(m)[None, :] < size[:, None], axis=1)  # its first `size` join
        packed = np.packbits(drawn, axis=1)
        keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()  # one comparable value per draw
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        paired = size <= n_paired
        is_new = np.zeros(draws, dtype=bool)
        is_new[first] = True
        # draws in order until the budget is spent: a new coalition costs one, two with its complement
        spent = np.cumsum(np.where(is_new, 1 + paired, 0))
        if spent[-1] >= budget:
            break
    last = int(np.searchsorted(spent, budget))  # the draw that spends the budget (or the last draw)
    used = np.arange(min(last + 1, draws))
    new = used[is_new[used]]
    w = np.bincount(inverse[used], minlength=len(first))[inverse[new]].astype(np.float64)
    comp = paired[new]
    if spent[used[-1]] > budget:  # the budget ran out between the last coalition and its complement
        comp[-1] = False
    rows, kw = [drawn[new], ~drawn[new][comp]], [w, w[comp]]
    weight = np.concatenate(kw)
    return np.concatenate(rows), weight * weights[full:].sum() / weight.sum()


def kernel_shap(model: Model, x: np.ndarray, background: np.ndarray, nsamples: int, seed: int = 0,
                groups: Sequence[np.ndarray] | None = None, masked: Masked | None = None) -> KernelShapResult:
    """Shapley values of ``model`` at row ``x`` against ``background`` rows (a coalition's value is the
    model's mean over the background with the coalition's columns set to ``x``). With ``groups`` (column
    index arrays) each group is one player. ``masked``, where given, computes the model's output for every
    coalition (a boolean row per coalition: True = the column is ``x``'s) against every background row
    at once, shape (coalitions, background rows), the way the model's structure allows."""
    bg = np.asarray(background)
    bg = bg.reshape(-1, bg.shape[-1]) if bg.dtype in (np.float32, np.float64) else bg.astype(np.float64)
    x = np.asarray(x, dtype=bg.dtype).reshape(-1)
    cols = [np.asarray(g) for g in groups] if groups is not None else [np.array([i]) for i in range(len(x))]
    fx = float(model(x[None, :])[0])
    base = float(np.mean(model(bg)))
    phi = np.zeros(len(cols))
    # a player whose columns equal the background's in every row cannot move the score: value 0, not a player
    varies = ~np.all(np.isclose(bg, x[None, :], equal_nan=True), axis=0)
    players = [j for j, c in enumerate(cols) if varies[c].any()]
    m = len(players)
    if m <= 1:
        phi[players] = fx - base
        return KernelShapResult(phi, base, fx, True, 0)
    mask, weight, exact = coalitions(m, nsamples, np.random.default_rng(seed))
    member = np.zeros((m, len(x)), dtype=np.float32)
    for j, p in enumerate(players):
        member[j, cols[p]] = 1.0
    column_mask = (mask.astype(np.float32) @ member) > 0  # coalition -> the columns taken from x
    if masked is not None:
        ey = np.asarray(masked(column_mask), dtype=np.float64).mean(axis=1)
    else:  # every coalition's rows against the background, in the background's dtype, in one model call
        rows = np.where(column_mask[:, None, :], x[None, None, :], bg[None, :, :])
        ey = model(rows.reshape(-1, len(x))).reshape(len(mask), len(bg)).mean(axis=1)
    # efficiency constraint: the last player's value is what the others leave of f(x) - base
    z = mask.astype(np.float64)
    y = ey - base - z[:, -1] * (fx - base)
    a = z[:, :-1] - z[:, -1:]
    wa = a * weight[:, None]
    coef = np.linalg.solve(a.T @ wa, wa.T @ y)  # the weighted normal equations, as shap solves them
    phi[players] = np.append(coef, (fx - base) - coef.sum())
    return KernelShapResult(phi, base, fx, exact, len(mask))
