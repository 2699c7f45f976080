"""Calibration of a selected model's outputs from its out-of-fold predictions (:mod:`vggtransfer.models.select`):

- regression: identity vs a fitted linear map vs isotonic regression, chosen by a second cross-validation over the
  out-of-fold pairs (undoes the shrinkage toward the mean that regularised models have);
- classification: a temperature on the log-probabilities fitted to the out-of-fold predictions (cross-entropy against
  Platt's prior-corrected targets), and the expected calibration error that ``vggtransfer evaluate`` reports.
"""

from __future__ import annotations

import math

import numpy as np

CALIBRATIONS = ("identity", "linear", "isotonic")
#: Slope added to the isotonic map (target units per unit of prediction): keeps the order of predictions.
TIE_BREAK = 1e-6


def fit_regression_calibration(pred, y, k: int = 5, seed: int = 0) -> dict:
    """Choose identity, linear or isotonic by ``k``-fold CV on out-of-fold (pred, y) pairs; fit it on all pairs.

    Returns ``{'kind', 'cv_rmse': {kind: rmse}, ...params}``; apply with :func:`apply_regression_calibration`.
    """
    from sklearn.isotonic import IsotonicRegression
    from sklearn.model_selection import KFold

    pred, y = np.asarray(pred, np.float64), np.asarray(y, np.float64)

    def fit(kind, p, t):
        if kind == "identity":
            return {"kind": "identity"}
        if kind == "linear":
            slope, intercept = np.polyfit(p, t, 1)
            return {"kind": "linear", "slope": float(slope), "intercept": float(intercept)}
        iso = IsotonicRegression(out_of_bounds="clip").fit(p, t)
        return {"kind": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}

    sq = {kind: 0.0 for kind in CALIBRATIONS}
    for tr, te in KFold(min(k, len(y)), shuffle=True, random_state=seed).split(pred):
        for kind in CALIBRATIONS:
            sq[kind] += float(np.sum((apply_regression_calibration(fit(kind, pred[tr], y[tr]), pred[te]) - y[te]) ** 2))
    cv = {kind: math.sqrt(v / len(y)) for kind, v in sq.items()}
    best = min(CALIBRATIONS, key=lambda kind: (round(cv[kind], 9), CALIBRATIONS.index(kind)))
    return {**fit(best, pred, y), "cv_rmse": cv}


def apply_regression_calibration(cal: dict, pred) -> np.ndarray:
    """The calibration map of :func:`fit_regression_calibration` applied to predictions (NaN stays NaN)."""
    pred = np.asarray(pred, np.float64)
    kind = cal["kind"]
    if kind == "identity":
        return pred
    if kind == "linear":
        return cal["slope"] * pred + cal["intercept"]
    if kind == "isotonic":
        x, y = np.asarray(cal["x"]), np.asarray(cal["y"])
        # Plus a vanishing slope: the map is strictly increasing, so tied steps never lose the ranking (AUC).
        return np.where(np.isnan(pred), np.nan, np.interp(pred, x, y) + TIE_BREAK * (pred - x.mean()))
    raise ValueError(f"unknown calibration kind {kind!r}")


def scores_to_log_probs(scores, temperature: float = 1.0) -> np.ndarray:
    """Log-softmax of ``scores / temperature`` (rows): a least-squares classifier's scores, or log-probabilities at
    another temperature, as class log-probabilities."""
    z = np.asarray(scores, np.float64) / temperature
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def fit_temperature(log_probs, y) -> float:
    """The temperature T > 0 minimising the cross-entropy of softmax(log_probs / T) (out-of-fold log-probabilities)
    against Platt's prior-corrected targets: an item of class k puts (N_k + 1) / (N_k + 2) on k and the rest evenly
    on the other classes, N_k being the class's count (Platt 1999, section 2.2; for two classes exactly his targets).

    Why not the plain likelihood: when every out-of-fold prediction is right (a small or easy set), its optimum is
    T -> 0, every prediction a certainty, which unseen photos then contradict. The corrected targets bound the
    confidence by what N examples can show and leave large sets' fits nearly unchanged."""
    from scipy.optimize import minimize_scalar

    lp = np.maximum(np.asarray(log_probs, np.float64), -50.0)
    y = np.asarray(y)
    n, k = lp.shape
    counts = np.bincount(y, minlength=k).astype(np.float64)
    hit = (counts[y] + 1.0) / (counts[y] + 2.0)
    targets = np.repeat(((1.0 - hit) / max(k - 1, 1))[:, None], k, axis=1)
    targets[np.arange(n), y] = hit

    def cross_entropy(log_t):
        return float(-np.mean(np.sum(targets * scores_to_log_probs(lp, math.exp(log_t)), axis=1)))

    # Wide bounds: a least-squares classifier's scores differ by about 1 between classes, so they need T near 0.05.
    res = minimize_scalar(cross_entropy, bounds=(math.log(0.005), math.log(100.0)), method="bounded")
    return float(math.exp(res.x))


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """Probabilities re-calibrated with a temperature (rows of NaN stay NaN)."""
    lp = np.log(np.maximum(np.asarray(probs, np.float64), 1e-300)) / temperature
    lp = lp - np.nanmax(lp, axis=1, keepdims=True)
    e = np.exp(lp)
    return e / e.sum(1, keepdims=True)


def expected_calibration_error(probs, y, bins: int = 15) -> float:
    """ECE: the confidence-weighted gap between the top probability and the accuracy, over ``bins`` equal bins."""
    probs, y = np.asarray(probs), np.asarray(y)
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(float(np.mean(pred[m] == y[m])) - float(conf[m].mean()))
    return float(ece)


__all__ = [
    "CALIBRATIONS",
    "fit_regression_calibration",
    "apply_regression_calibration",
    "scores_to_log_probs",
    "fit_temperature",
    "apply_temperature",
    "expected_calibration_error",
]
