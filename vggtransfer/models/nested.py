"""Nested cross-validation of a whole training procedure (``train --nested-cv``): an estimate of how well it does on
rows it never saw, free of the optimism of the winner's own CV score."""

from __future__ import annotations

import numpy as np

from vggtransfer.models.folds import make_folds
from vggtransfer.models.select import fold_score, metric_name


def nested_estimate(
    fit, predict, y, task: str, k: int = 5, seed: int = 0, log=None, classes=None, copies=None, row_weights=None
) -> dict:
    """An estimate of the whole procedure by nested cross-validation: ``k`` outer folds (other than the inner ones);
    on each, ``fit(train_rows)`` runs selection, refit and calibration on the outer training rows alone and returns
    a one-line description of its choice, and ``predict(test_rows)`` gives its calibrated outputs on the held-out
    rows, which are scored (accuracy, or RMSE for targets).

    Why: the winner's own CV score is the best of many candidates scored on the same folds, so it is optimistic
    where the folds are small (the winner's curse; Varma & Simon 2006, Cawley & Talbot 2010). The outer score is
    measured on rows that neither chose nor fitted the model it scores. Returns ``{'metric', 'folds', 'mean', 'std',
    'scores', 'choices'}``. ``classes``: the class names, for the error on a class with too few items. ``copies``:
    group ids of rows that are copies of one image (:func:`vggtransfer.models.folds.copy_groups`), kept in one outer
    fold. ``row_weights``: each row's class weight, where the classes carry weights (the score is then the
    class-weighted accuracy, as in :func:`vggtransfer.models.select.fold_score`)."""
    y = np.asarray(y)
    if task == "classification":
        counts = np.bincount(y)
        if counts[counts > 0].min() < 3:
            rare = [int(c) for c in np.flatnonzero((counts > 0) & (counts < 3))]
            named = [str(classes[c]) for c in rare] if classes is not None else f"index(es) {rare}"
            raise ValueError(
                f"nested cross-validation needs at least 3 training items of every class (the inner folds need 2 "
                f"of each); class {named} have fewer"
            )
    folds = make_folds(y, task, k, seed + 1, groups=copies)
    metric = metric_name(task, row_weights)
    scores, choices = [], []
    for i, (tr, te) in enumerate(folds):
        choices.append(fit(tr))
        out = np.asarray(predict(te))
        weights = None if row_weights is None else np.asarray(row_weights)[te]
        scores.append(fold_score(task, y[te], out, np.arange(len(te)), weights))
        if log:
            shown = f"{scores[-1]:.4g}" if metric == "rmse" else f"{100 * scores[-1]:.2f} %"
            log(f"nested CV, outer fold {i + 1} of {len(folds)}: {metric} {shown} on {len(te)} held-out rows")
    return {
        "metric": metric,
        "folds": len(folds),
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "scores": [float(s) for s in scores],
        "choices": choices,
    }


__all__ = ["nested_estimate"]
