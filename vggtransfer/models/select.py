"""Cross-validated choice of what to fit on cached features: feature block group x model x regularisation, then a
calibration of the winner's outputs from its out-of-fold predictions. Training data only: nothing here sees a test
set.

The search is staged so that it costs less than extracting the features it runs on:

1. **Block group** (which end points, which poolings) with the closed-form or warm-started linear model: ridge
   regression for targets (one SVD per fold gives every alpha), logistic regression for classes (one warm-started
   lbfgs path over C per fold).
2. **Model** on the winning group: the linear model against the Dense head (TensorFlow, early-stopped on the fold's
   held-out part), each over its own small regularisation grid.
3. **Calibration** of the winner from its out-of-fold outputs: regression, identity vs a fitted linear map vs
   isotonic regression, chosen by a second cross-validation over the out-of-fold pairs (undoes the shrinkage toward
   the mean that regularised models have); classification, a temperature on the log-probabilities fitted by
   minimising the out-of-fold negative log-likelihood.

Folds are stratified: by class, or by quantile bin of the target. Every feature block is power- and L2-normalised
first (:func:`vggtransfer.features.blocks.normalise_blocks`), so blocks of different depth weigh alike.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from vggtransfer.features.spec import parse_block_name
from vggtransfer.nets.cfg import end_point_names

#: Regularisation grids (per model); the features are L2-normalised per block, so the grids are fixed, not
#: data-dependent. Wide enough that the chosen value is interior on every set we ran (the table says).
LOGREG_CS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
RIDGE_ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
DENSE_L2S = (0.01, 0.1, 1.0)
MODELS = {"classification": ("logreg", "dense"), "regression": ("ridge", "dense")}
CALIBRATIONS = ("identity", "linear", "isotonic")
#: Slope added to the isotonic map (target units per unit of prediction): keeps the order of predictions.
TIE_BREAK = 1e-6


@dataclass
class Candidate:
    """One point of the grid and its cross-validated score."""

    group: str
    model: str
    reg: float
    scores: list  # per fold: accuracy (classification) or RMSE (regression)
    loss: float = math.nan  # out-of-fold log loss (classification) or MSE (regression)

    @property
    def mean(self) -> float:
        """Mean of the fold scores."""
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        """Standard deviation of the fold scores."""
        return float(np.std(self.scores))

    def to_dict(self) -> dict:
        """Plain JSON-ready data."""
        return {
            "group": self.group,
            "model": self.model,
            "reg": self.reg,
            "mean": self.mean,
            "std": self.std,
            "scores": [float(s) for s in self.scores],
            "loss": float(self.loss),
        }


@dataclass
class Selection:
    """The outcome of :func:`select`: the winner, every candidate's score, the winner's out-of-fold outputs."""

    task: str
    best: Candidate
    table: list
    oof: np.ndarray  # regression: (n,) predictions; classification: (n, K) log-probabilities
    best_epochs: list = field(default_factory=list)  # Dense head winners: the early-stopping epoch of each fold
    seconds: float = 0.0
    folds: int = 0

    def summary(self) -> dict:
        """JSON-ready: the choice, the CV estimate and the table."""
        return {
            "group": self.best.group,
            "model": self.best.model,
            "reg": self.best.reg,
            "metric": "accuracy" if self.task == "classification" else "rmse",
            "cv_mean": self.best.mean,
            "cv_std": self.best.std,
            "folds": self.folds,
            "seconds": round(self.seconds, 2),
            "best_epochs": self.best_epochs,
            "table": [c.to_dict() for c in self.table],
        }


# --- block groups -------------------------------------------------------------------------------------------------
def candidate_groups(blocks) -> dict:
    """``{label: [block names]}``: nested end-point sets ending at the deepest (pool5; pool4+pool5; ...) x pooling sets
    (avg; avg+max) x, where the rows hold several scales, the scale of the image (each scale alone, then all of them
    stacked): which resolution suits a data set is chosen by cross-validation like the rest. ``blocks`` is
    ``[(name, start, stop), ...]``."""
    parsed = [(n,) + parse_block_name(n) for n, _, _ in blocks]
    order = end_point_names("vgg19")
    eps = sorted({p[1] for p in parsed}, key=lambda e: order.index(e) if e in order else 0)
    pools = [p for p in ("avg", "max") if any(q[2] == p for q in parsed)]
    scales = sorted({p[3] for p in parsed})
    ep_sets = [tuple(eps[i:]) for i in range(len(eps) - 1, -1, -1)]
    pool_sets = [tuple(pools[:i]) for i in range(1, len(pools) + 1)]
    scale_sets = [tuple(scales)] if len(scales) == 1 else [(q,) for q in scales] + [tuple(scales)]
    groups = {}
    for qs in scale_sets:
        suffix = "" if len(scales) == 1 else " @" + "+".join(map(str, qs))
        for es in ep_sets:
            for ps in pool_sets:
                label = f"{'+'.join(es)} {'+'.join(ps)}{suffix}"
                groups[label] = [n for n, ep, p, q in parsed if ep in es and p in ps and q in qs]
    return groups


def columns(blocks, names) -> np.ndarray:
    """Column indices of the named blocks, in the order of ``names``."""
    where = {n: (a, b) for n, a, b in blocks}
    return np.concatenate([np.arange(*where[n]) for n in names])


# --- folds --------------------------------------------------------------------------------------------------------
def make_folds(y, task: str, k: int = 5, seed: int = 0) -> list:
    """``[(train_idx, test_idx), ...]``: stratified by class, or by quantile bin of the target for regression (as
    many bins, up to 5, as keep ``k`` items in each)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    y = np.asarray(y)
    if len(y) < 4:
        raise ValueError(f"cross-validation needs at least 4 training items, got {len(y)}")
    if task == "classification":
        counts = np.bincount(y)
        counts = counts[counts > 0]
        if counts.min() < 2:
            rare = [int(c) for c in np.flatnonzero(np.bincount(y) == 1)]
            raise ValueError(
                f"cross-validation needs at least 2 training items of every class; class index(es) {rare} have 1"
            )
        k = int(max(2, min(k, counts.min())))
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    k = int(max(2, min(k, len(y) // 2)))
    bins = min(5, len(y) // k)
    if bins < 2:
        return list(KFold(k, shuffle=True, random_state=seed).split(y))
    edges = np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1])
    strata = np.searchsorted(edges, y, side="right")
    if np.bincount(strata).min() < k:  # ties at the edges: fall back to plain shuffled folds
        return list(KFold(k, shuffle=True, random_state=seed).split(y))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), strata))


# --- the linear models ---------------------------------------------------------------------------------------------
def _ridge_basis(x_train, y_train):
    """Eigen-decomposition of the smaller Gram matrix of the centred training features (primal d x d when d < n,
    else the kernel n x n): every alpha then costs one matrix-vector product."""
    x = np.asarray(x_train, np.float64)
    xm, ym = x.mean(0), float(np.mean(y_train))
    xc, yc = x - xm, np.asarray(y_train, np.float64) - ym
    primal = xc.shape[1] < xc.shape[0]
    lam, vec = np.linalg.eigh(xc.T @ xc if primal else xc @ xc.T)
    proj_y = vec.T @ (xc.T @ yc if primal else yc)
    return xm, ym, xc, primal, np.maximum(lam, 0.0), vec, proj_y


def _ridge_coef(basis, alpha: float) -> np.ndarray:
    xm, ym, xc, primal, lam, vec, proj_y = basis
    w = vec @ (proj_y / (lam + alpha))
    return w if primal else xc.T @ w


def ridge_path(x_train, y_train, x_test, alphas) -> np.ndarray:
    """Ridge predictions (len(alphas), n_test) for every alpha from one eigen-decomposition."""
    basis = _ridge_basis(x_train, y_train)
    xt = np.asarray(x_test, np.float64) - basis[0]
    return np.stack([xt @ _ridge_coef(basis, a) + basis[1] for a in alphas])


def fit_ridge(x, y, alpha: float) -> dict:
    """Closed-form ridge: ``{'coef', 'intercept'}``."""
    basis = _ridge_basis(x, y)
    coef = _ridge_coef(basis, alpha)
    return {"coef": coef, "intercept": float(basis[1] - basis[0] @ coef)}


def logreg_path(x_train, y_train, x_test, cs, n_classes: int, class_weight=None, seed: int = 0) -> np.ndarray:
    """Log-probabilities (len(cs), n_test, K) of multinomial logistic regression along ``cs`` (warm-started)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(
        C=cs[0], max_iter=300, tol=1e-3, warm_start=True, class_weight=class_weight, random_state=seed
    )
    out = np.full((len(cs), len(x_test), n_classes), -np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, c in enumerate(cs):
            clf.set_params(C=c)
            clf.fit(x_train, y_train)
            out[i][:, clf.classes_] = clf.predict_log_proba(x_test)
    return out


def fit_logreg(x, y, c: float, class_weight=None, seed: int = 0):
    """A fitted multinomial LogisticRegression at ``C=c``."""
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(C=c, max_iter=1000, tol=1e-4, class_weight=class_weight, random_state=seed).fit(x, y)


# --- scoring ------------------------------------------------------------------------------------------------------
def _score(task, y, out, idx) -> float:
    if task == "classification":
        return float(np.mean(out[idx].argmax(1) == y[idx]))
    return float(np.sqrt(np.mean((out[idx] - y[idx]) ** 2)))


def _loss(task, y, out) -> float:
    if task == "classification":
        lp = out[np.arange(len(y)), y]
        return float(-np.mean(np.maximum(lp, -50)))
    return float(np.mean((out - y) ** 2))


def _better(task, a: Candidate, b: Candidate | None) -> bool:
    """a beats b: higher accuracy (ties: lower log loss), or lower RMSE."""
    if b is None:
        return True
    if task == "classification":
        return (round(a.mean, 6), -a.loss) > (round(b.mean, 6), -b.loss)
    return a.mean < b.mean


# --- the search ---------------------------------------------------------------------------------------------------
def select(
    features,
    y,
    blocks,
    task: str,
    *,
    models=None,
    k: int = 5,
    seed: int = 0,
    n_classes: int = 0,
    class_weight=None,
    groups: dict | None = None,
    dense=None,
    dense_l2s=DENSE_L2S,
    logreg_cs=LOGREG_CS,
    ridge_alphas=RIDGE_ALPHAS,
    log=None,
) -> Selection:
    """Stratified ``k``-fold CV over block group x model x regularisation on normalised ``features``.

    ``models`` restricts the candidates (default :data:`MODELS` of the task). ``dense`` is a callable
    ``dense(x_train, y_train, x_val, y_val, l2, seed) -> (outputs on x_val, best epoch)`` training the Dense head
    (see :mod:`vggtransfer.models.auto`). ``log`` receives one line per stage.
    """
    t0 = time.perf_counter()
    y = np.asarray(y)
    models = tuple(models or MODELS[task])
    groups = groups or candidate_groups(blocks)
    folds = make_folds(y, task, k, seed)
    table = []
    linear = "logreg" if task == "classification" else "ridge"

    def oof_linear(cols):
        x = features[:, cols]
        grid = logreg_cs if task == "classification" else ridge_alphas
        shape = (len(grid), len(y), n_classes) if task == "classification" else (len(grid), len(y))
        out = np.zeros(shape)
        for tr, te in folds:
            if task == "classification":
                out[:, te] = logreg_path(x[tr], y[tr], x[te], grid, n_classes, class_weight, seed)
            else:
                out[:, te] = ridge_path(x[tr], y[tr], x[te], grid)
        return grid, out

    # Stage 1: the block group, with the linear model (its whole regularisation path per fold). Where only the Dense
    # head is allowed (``Vgg16``), the linear model still chooses the group, as a cheap proxy.
    best, best_out, best_group_label = None, None, None
    stage1_model = linear if linear in models else None
    for label, names in groups.items():
        cols = columns(blocks, names)
        grid, out = oof_linear(cols)
        for reg, o in zip(grid, out):
            cand = Candidate(label, linear, float(reg), [_score(task, y, o, te) for _, te in folds], _loss(task, y, o))
            table.append(cand)
            if _better(task, cand, best):
                best, best_out, best_group_label = cand, o, label
    assert best is not None and best_group_label is not None, "at least one block group and regularisation"
    if log:
        log(f"block group {best_group_label} ({best.model} {best.reg:g}: {best.mean:.4g} ± {best.std:.2g})")

    # Stage 2: the Dense head on that group.
    best_epochs = []
    if stage1_model is None:
        best, best_out = None, None
    if "dense" in models:
        if dense is None:
            raise ValueError("models include 'dense' but no Dense head trainer was given")
        x = features[:, columns(blocks, groups[best_group_label])]
        for l2 in dense_l2s:
            shape = (len(y), n_classes) if task == "classification" else (len(y),)
            out, epochs = np.zeros(shape), []
            for i, (tr, te) in enumerate(folds):
                out[te], ep = dense(x[tr], y[tr], x[te], y[te], l2, seed + i)
                epochs.append(ep)
            if task == "classification":
                out = np.log(np.maximum(out, 1e-30))
            cand = Candidate(
                best_group_label, "dense", float(l2), [_score(task, y, out, te) for _, te in folds], _loss(task, y, out)
            )
            table.append(cand)
            if _better(task, cand, best):
                best, best_out, best_epochs = cand, out, epochs
        assert best is not None, "at least one L2 weight for the Dense head"
        if log:
            log(f"model {best.model} {best.reg:g}: {best.mean:.4g} ± {best.std:.2g}")
    assert best is not None and best_out is not None
    return Selection(task, best, table, best_out, best_epochs, time.perf_counter() - t0, len(folds))


# --- calibration --------------------------------------------------------------------------------------------------
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


def fit_temperature(log_probs, y) -> float:
    """The temperature T > 0 minimising the NLL of softmax(log_probs / T) (out-of-fold log-probabilities)."""
    from scipy.optimize import minimize_scalar

    lp = np.maximum(np.asarray(log_probs, np.float64), -50.0)
    y = np.asarray(y)

    def nll(log_t):
        z = lp / math.exp(log_t)
        z = z - z.max(1, keepdims=True)
        return float(-np.mean(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))))

    res = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
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
    "Candidate",
    "Selection",
    "select",
    "candidate_groups",
    "columns",
    "make_folds",
    "ridge_path",
    "fit_ridge",
    "logreg_path",
    "fit_logreg",
    "fit_regression_calibration",
    "apply_regression_calibration",
    "fit_temperature",
    "apply_temperature",
    "expected_calibration_error",
    "MODELS",
]
