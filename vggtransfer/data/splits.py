"""Seeded, stratified splits, balanced class weights and training-target encoding: plain numpy, no TensorFlow."""

from __future__ import annotations

import numpy as np

from vggtransfer.data.images import path_list


def split_indices(n: int, val_fraction: float, seed: int, labels=None, groups=None):
    """Deterministic (train, val) index arrays; stratified by ``labels`` when given. ``groups``: one id per row; the
    rows of a group (an image and its mirror image, copies of one photo) land on one side, the groups stratified by
    the label of their first row. Unique ids give the same split as no groups."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise ValueError(f"groups must give one id per row ({n}), got shape {groups.shape}")
        _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
        by_group = None if labels is None else np.asarray(labels)[first]
        _, val_groups = split_indices(len(first), val_fraction, seed, by_group)
        is_val = np.isin(inverse, val_groups)
        return np.flatnonzero(~is_val), np.flatnonzero(is_val)
    rng = np.random.default_rng(seed)
    if labels is None:
        groups = [np.arange(n)]
    else:
        labels = np.asarray(labels)
        groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    train: list = []
    val: list = []
    for g in groups:
        g = rng.permutation(g)
        k = int(round(len(g) * val_fraction))
        if val_fraction > 0 and k == 0 and len(g) > 1:
            k = 1
        val.extend(g[:k])
        train.extend(g[k:])
    return np.sort(np.array(train, dtype=int)), np.sort(np.array(val, dtype=int))


def balanced_class_weights(labels, k: int) -> np.ndarray:
    """'Balanced' weights n / (K * count_k) for class indices ``labels`` in 0..k-1 (0 for an absent class)."""
    labels = np.asarray(labels, np.int64)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return np.where(counts > 0, len(labels) / (k * np.maximum(counts, 1)), 0.0)


def resolve_class_weights(class_weights, y_train, k: int):
    """Per-class loss weights for class indices ``y_train``: None, 'balanced' (see :func:`balanced_class_weights`)
    or an array of ``k`` weights; anything else is a ValueError naming what was expected."""
    if class_weights is None:
        return None
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(f"class_weights must be 'balanced' or an array, got {class_weights!r}")
        return balanced_class_weights(y_train, k)
    weights = np.asarray(class_weights, np.float64)
    if weights.shape != (k,):
        raise ValueError(f"class_weights must have one weight per class ({k}), got shape {weights.shape}")
    return weights


__all__ = ["split_indices", "balanced_class_weights", "resolve_class_weights", "training_items", "infer_classes"]


def training_items(image_paths, targets) -> tuple:
    """``train(image_paths, targets)``'s arguments checked before any image is read: ``(paths, targets)`` as a list
    of str and a 1-D array. One path (str or os.PathLike) is one item; a column of targets (n, 1) is accepted as
    scikit-learn does. ValueError for no items, a count mismatch or targets of another shape."""
    paths, _ = path_list(image_paths)
    if not paths:
        raise ValueError("no training images: image_paths is empty")
    y = np.asarray(targets)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"targets must be one value per image (a 1-D sequence), got shape {y.shape}")
    if len(paths) != len(y):
        raise ValueError(f"{len(paths)} image paths but {len(y)} targets")
    return paths, y


def infer_classes(targets) -> tuple:
    """Class names from training labels when none were given: the sorted distinct labels as str (as scikit-learn's
    ``classes_``; numbers sort numerically). ValueError for fewer than 2."""
    values = np.unique(np.asarray(targets))
    if len(values) < 2:
        raise ValueError(f"a classifier needs at least 2 classes; the labels hold {[str(v) for v in values]}")
    return tuple(str(v) for v in values)


def encode_targets(targets, task: str, classes=()) -> np.ndarray:
    """Training targets as the models use them. Regression: finite float64 (else a ValueError naming the rows).
    Classification: class names or indices -> int64 indices into ``classes`` (else a ValueError naming the rows)."""
    targets = np.asarray(targets)
    if task == "regression":
        try:
            y = targets.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError("regression targets must be numbers") from None
        if not np.isfinite(y).all():
            bad = np.flatnonzero(~np.isfinite(y))[:5].tolist()
            raise ValueError(f"targets must be finite numbers; rows {bad} are not")
        return y
    classes = list(classes)
    if targets.dtype.kind in "iu":
        y = targets.astype(np.int64)
        bad = np.flatnonzero((y < 0) | (y >= len(classes)))
    else:
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index.get(str(t), -1) for t in targets], np.int64)
        bad = np.flatnonzero(y < 0)
    if len(bad):
        raise ValueError(f"unknown labels at rows {bad[:5].tolist()} (e.g. {targets[bad[0]]!r}); classes are {classes}")
    return y


def class_index_map(data_classes, model_classes, source: str = "data") -> np.ndarray:
    """For evaluation: the model's class index of each of the data's classes (by name), so that a test set may hold
    a subset of the model's classes, in any order. A class the model does not know is a ValueError naming it."""
    model_classes = [str(c) for c in model_classes]
    unknown = [str(c) for c in data_classes if str(c) not in model_classes]
    if unknown:
        raise ValueError(
            f"{source}: class(es) {', '.join(repr(c) for c in unknown)} are not among the model's classes "
            f"({', '.join(model_classes)})"
        )
    return np.array([model_classes.index(str(c)) for c in data_classes], np.int64)


def check_data_classes(task: str, data_classes, model_classes) -> None:
    """Refuse data that does not fit the model: classes given to a regressor, or other classes than the model's."""
    if task != "classification":
        if data_classes:
            raise ValueError(
                f"this is a regressor; the data has classes {tuple(data_classes)} instead of numeric "
                "targets (give a CSV with path,target)"
            )
        return
    if tuple(data_classes) != tuple(model_classes):
        raise ValueError(f"data classes {tuple(data_classes)} differ from the model's {tuple(model_classes)}")
