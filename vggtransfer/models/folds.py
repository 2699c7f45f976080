"""The rows cross-validation runs on and how they are split into folds: stratified folds (by class, or by quantile bin
of the target), a stratified sample of a large set, and copies of one image kept in one fold.

Why copies matter: a data set gathered from the web or from several folders often holds the same photo twice (the
SIGNS JPEGs hold 43 such pairs among their 1,080 training images). A copy in the training part of a fold and its twin in
the held-out part is scored as if it were new: the CV estimate reads high, and the choice leans to models that
memorise. :func:`copy_groups` finds rows with the same features (the same pixels give the same features: identical
files, or one image in two lossless formats) and :func:`make_folds` keeps each group in one fold, as scikit-learn's
group k-fold does for any grouping. A re-encoded copy (the same photo as JPEG at another quality) is not found: its
features are as far from its original's as a different photo's of the same scene (SIGNS' h5 pixels against their
quality-75 JPEGs: relative distance 0.23-0.31; the nearest distinct photos 0.26-0.35), so no threshold tells them
apart.
"""

from __future__ import annotations

import numpy as np

from vggtransfer.data.datasets import fingerprints, first_copies
from vggtransfer.models.defaults import CV_MIN_PER_CLASS


def copy_groups(x) -> np.ndarray | None:
    """Group ids (the first row of each group) of rows of ``x`` that are copies of each other, or None where every
    row is distinct. A copy is a bit-identical row: the extraction is deterministic per image, whatever the batch it
    ran in (measured: an image alone, in a batch of 2 and in a batch of 12 gives the same bits; the SIGNS JPEGs' 43
    pairs of identical files give 43 pairs of identical rows), so the same pixels give the same row. Rows are hashed
    (:func:`vggtransfer.data.datasets.fingerprints`, as training files are), so the cost is one pass over them."""
    x = np.ascontiguousarray(x)
    if len(x) < 2:
        return None
    groups = first_copies(fingerprints(x))
    return None if np.array_equal(groups, np.arange(len(x))) else groups


def copies_count(groups) -> int:
    """Rows that are copies of an earlier row (0 for None)."""
    return 0 if groups is None else int(len(groups) - len(np.unique(groups)))


def make_folds(y, task: str, k: int = 5, seed: int = 0, groups=None) -> list:
    """``[(train_idx, test_idx), ...]``: stratified by class, or by quantile bin of the target for regression (as
    many bins, up to 5, as keep ``k`` items in each). ``groups`` (from :func:`copy_groups`): rows of one group land in
    one fold. A class with fewer distinct images than folds cannot be split that way; its copies are then treated as
    distinct (every fold must train on every class)."""
    from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y)
    if len(y) < 4:
        raise ValueError(f"cross-validation needs at least 4 training items, got {len(y)}")
    if task == "classification":
        counts = np.bincount(y)
        counts = counts[counts > 0]
        if counts.min() < CV_MIN_PER_CLASS:
            rare = [int(c) for c, n in enumerate(np.bincount(y)) if 0 < n < CV_MIN_PER_CLASS]
            raise ValueError(
                f"cross-validation needs at least {CV_MIN_PER_CLASS} training items of every class; class "
                f"index(es) {rare} have fewer"
            )
        k = int(max(2, min(k, counts.min())))
        groups = _splittable(groups, y, k)
        if groups is not None:
            return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    k = int(max(2, min(k, len(y) // 2)))
    bins = min(5, len(y) // k)
    strata = quantile_bins(y, bins) if bins >= 2 else np.zeros(len(y), int)
    if bins < 2 or np.bincount(strata).min() < k:  # ties at the edges: plain shuffled folds
        strata = np.zeros(len(y), int)
    if groups is not None and len(np.unique(groups)) >= k:
        return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), strata, groups))
    if not strata.any():
        return list(KFold(k, shuffle=True, random_state=seed).split(y))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), strata))


def _splittable(groups, y, k: int):
    """``groups`` with the copies of any class that has fewer than ``k`` distinct images made distinct (so that
    every class still has an image on the training side of every fold); None when nothing is left grouped."""
    if groups is None:
        return None
    groups = np.asarray(groups).copy()
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        if len(np.unique(groups[rows])) < k:
            groups[rows] = len(y) + rows  # ids no other row has
    return None if len(np.unique(groups)) == len(groups) else groups


def quantile_bins(y, bins: int) -> np.ndarray:
    """The quantile bin (0 .. ``bins`` - 1) of each target: the strata of regression folds and samples."""
    edges = np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, y, side="right")


def selection_rows(y, task: str, max_rows: int, k: int = 5, seed: int = 0) -> np.ndarray:
    """Sorted row indices for cross-validation: all rows when there are at most ``max_rows``, else a seeded sample
    stratified like the folds (by class, or by decile of the target) of about ``max_rows``, keeping at least
    ``2 * k`` rows (or all) of every class so that every fold still sees every class."""
    y = np.asarray(y)
    n = len(y)
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    if n <= max_rows:
        return np.arange(n)
    if task == "classification":
        strata = y
    else:
        strata = quantile_bins(y, 10)
    rng = np.random.default_rng(seed)
    keep = []
    for s in np.unique(strata):
        rows = np.flatnonzero(strata == s)
        want = max(int(round(len(rows) * max_rows / n)), min(len(rows), 2 * k) if task == "classification" else 1)
        keep.append(rng.choice(rows, size=min(want, len(rows)), replace=False))
    return np.sort(np.concatenate(keep))


__all__ = ["copy_groups", "copies_count", "make_folds", "quantile_bins", "selection_rows"]
