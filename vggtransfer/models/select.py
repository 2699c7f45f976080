"""Cross-validated choice of what to fit on cached features: feature block group x model x regularisation, then a
calibration of the winner's outputs from its out-of-fold predictions. Training data only: nothing here sees a test
set.

The search is staged so that it costs less than extracting the features it runs on:

1. **Block group** (which end points, poolings and scales) with closed-form ridge over its whole alpha path: ridge
   regression for targets, the least-squares classifier (ridge on one-hot codes) for classes. Each group's Gram
   matrix is computed once and shared by the folds (the kernel when the group is wider than the folds are long),
   so a group costs about as much for 2 classes as for 200.
2. **Model** on the winning group: for classes logistic regression over C (one warm-started lbfgs path per fold,
   stopped relative to its gradient at zero) against the Dense head; for targets ridge against the Dense head
   (TensorFlow, early-stopped on 20 % of the fold's training rows), each over its own small regularisation grid.
3. **Calibration** of the winner from its out-of-fold outputs (:mod:`vggtransfer.models.calibration`).

Both stages are raced (Maron & Moore 1994): a candidate (a block group's whole alpha path, a logistic-regression path,
a Dense head L2) whose folds so far are worse than the best candidate's on the same held-out rows by more than
:data:`RACE_Z` standard errors of the paired difference runs no further fold. On many classes most block groups and
the Dense head are far behind after one fold, and their folds are most of selection's time.

Folds are stratified: by class, or by quantile bin of the target. Every feature block is power- and L2-normalised
first (:func:`vggtransfer.features.blocks.normalise_blocks`), so blocks of different depth weigh alike.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from vggtransfer.features.spec import parse_block_name
from vggtransfer.models.calibration import fit_temperature, scores_to_log_probs
from vggtransfer.models.defaults import AUTO
from vggtransfer.models.folds import copies_count, make_folds, selection_rows  # noqa: F401 (re-exported)
from vggtransfer.models.solvers import logreg_path, ridge_oof_folds
from vggtransfer.nets.cfg import end_point_names

#: Regularisation grids (per model); the features are L2-normalised per block, so the grids are fixed, not
#: data-dependent. Wide enough that the chosen value is interior on every set we ran (the table says).
LOGREG_CS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
RIDGE_ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
DENSE_L2S = AUTO.dense_l2s
#: Racing: a candidate stops after a fold where it trails the best candidate so far, on the held-out rows of
#: the folds run, by more than this many standard errors of the paired per-row difference (correct or not for
#: classes, squared error for targets). One-sided, so a candidate as good as the best is stopped by chance about once
#: in 700 looks, and then it could only have tied; one truly better is practically never stopped.
RACE_Z = 3.0
MODELS = {"classification": ("logreg", "ridge", "dense"), "regression": ("ridge", "dense")}


@dataclass
class Candidate:
    """One point of the grid and its cross-validated score."""

    group: str
    model: str
    reg: float
    scores: list  # per fold: accuracy (classification) or RMSE (regression)
    loss: float = math.nan  # out-of-fold log loss at the fitted temperature (classification) or MSE (regression)
    raced: bool = False  # stopped by racing after len(scores) folds: far behind the best, never chosen

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
            "loss": None if math.isnan(self.loss) else float(self.loss),  # JSON has no NaN: not computed
            "raced": self.raced,
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
    #: An average of model families (``best.model == 'average'``): each family's best candidate on the chosen group,
    #: ``{'model', 'reg', 'temperature', 'epochs', 'cv_mean'}``, in the order ridge, logreg, dense.
    parts: list = field(default_factory=list)
    copies: int = 0  # rows that are copies of another row, kept in its fold
    metric: str = ""  # what the CV scores: 'accuracy', 'class-weighted accuracy' or 'rmse' (default: by the task)

    def summary(self) -> dict:
        """JSON-ready: the choice, the CV estimate and the table."""
        return {
            "group": self.best.group,
            "model": self.best.model,
            "reg": self.best.reg,
            "metric": self.metric or metric_name(self.task),
            "cv_mean": self.best.mean,
            "cv_std": self.best.std,
            "folds": self.folds,
            "copies": self.copies,
            "seconds": round(self.seconds, 2),
            "best_epochs": self.best_epochs,
            "parts": self.parts,
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


# --- scoring ------------------------------------------------------------------------------------------------------
def format_estimate(metric: str, mean: float, std: float) -> str:
    """A cross-validated estimate as people read it: ``96.33 ± 1.53 %`` (accuracies) or ``24.4 ± 2.3`` (RMSE)."""
    return f"{mean:.4g} ± {std:.2g}" if metric == "rmse" else f"{100 * mean:.2f} ± {100 * std:.2f} %"


def metric_name(task: str, row_weights=None) -> str:
    """What cross-validation scores: ``accuracy``; ``class-weighted accuracy`` where the classes carry weights (with
    ``'balanced'`` weights, the mean recall of the classes); ``rmse`` for targets."""
    if task != "classification":
        return "rmse"
    return "accuracy" if row_weights is None else "class-weighted accuracy"


#: The regularisation parameter of each model family, as the logs and reports name it.
REG_NAMES = {"logreg": "C", "ridge": "alpha", "dense": "L2"}


def describe_model(model: str, reg: float, members: int = 1) -> str:
    """A model family at one regularisation as people read it: ``ridge (alpha 10)``, ``dense (L2 0.1, 5 members)``."""
    bag = f", {members} members" if model == "dense" and members > 1 else ""
    return f"{model} ({REG_NAMES[model]} {reg:g}{bag})"


def fold_score(task, y, out, idx, row_weights=None) -> float:
    """The score of ``out`` on rows ``idx``: accuracy of the argmax (classes; with ``row_weights``, each row's class
    weight, the weighted accuracy the class weights ask the fit for) or RMSE (targets)."""
    if task == "classification":
        right = out[idx].argmax(1) == y[idx]
        if row_weights is None:
            return float(np.mean(right))
        w = row_weights[idx]
        return float(np.sum(w * right) / np.sum(w))
    return float(np.sqrt(np.mean((out[idx] - y[idx]) ** 2)))


def _loss(task, y, out) -> float:
    """Out-of-fold MSE (regression) or log loss (classes) at the temperature calibration would fit: the tie-breaker
    between candidates of equal accuracy compares them as they would be served, whatever their logits' scale."""
    if task == "classification":
        lp = scores_to_log_probs(out, fit_temperature(out, y))[np.arange(len(y)), y]
        return float(-np.mean(np.maximum(lp, -50)))
    return float(np.mean((out - y) ** 2))


def behind(task, y, best_out, out, rows, z: float = RACE_Z, row_weights=None) -> bool:
    """Whether ``out`` is worse than ``best_out`` on ``rows`` by more than ``z`` standard errors of the paired
    per-row difference: correct or not (classes; outputs whose argmax is the class; scaled by ``row_weights``
    relative to their mean where the classes carry weights), squared error (targets). Never on fewer than 10 rows."""
    y = y[rows]
    if task == "classification":
        d = (best_out[rows].argmax(1) == y).astype(float) - (out[rows].argmax(1) == y)
        if row_weights is not None:
            d = d * row_weights[rows] / np.mean(row_weights[rows])
    else:
        d = (out[rows] - y) ** 2 - (best_out[rows] - y) ** 2
    if len(d) < 10 or d.mean() <= 0:  # 10 rows: even all 10 against the candidate is a sign test's p = 0.001
        return False
    se = d.std(ddof=1) / math.sqrt(len(d))
    return se == 0 or d.mean() > z * se


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
    average: bool = True,
    copies=None,
) -> Selection:
    """Stratified ``k``-fold CV over block group x model x regularisation on normalised ``features``.

    ``models`` restricts the candidates (default :data:`MODELS` of the task). ``average`` (classes): where more
    than one model family has a candidate on the chosen group that racing did not stop, the result is the average
    of each family's best, calibrated (:func:`average_of_families`). ``dense`` is a callable
    ``dense(x_train, y_train, x_val, y_val, l2, seed, groups=...) -> (outputs on x_val, best epoch)`` training the
    Dense head on a fold's training rows and predicting its held-out rows ``x_val`` (``y_val`` is theirs, for test
    doubles; the library's trainer, in :mod:`vggtransfer.models.auto`, neither fits nor early-stops on them: it stops
    on a part of the training rows, keeping each of ``groups`` on one side). ``log`` receives one line per stage.
    ``copies``: group ids of rows that are views or copies of one image (the mirror image's row,
    :func:`vggtransfer.models.folds.copy_groups`), kept in one fold; the training rows' ids are passed to ``dense``
    as ``groups`` (None without copies).
    """
    t0 = time.perf_counter()
    y = np.asarray(y)
    models = tuple(models or MODELS[task])
    groups = groups or candidate_groups(blocks)
    folds = make_folds(y, task, k, seed, groups=copies)
    table = []

    # Stage 1: the block group, with closed-form ridge over its whole alpha path (one Gram matrix per group, shared
    # by the folds). For classes it is the least-squares classifier on one-hot codes (the linear SVM's squared-loss
    # cousin): it costs about the same for 2 or 200 classes, where a logistic regression per group and fold would
    # cost a solver run growing with the classes. Its scores become log-probabilities through a temperature fitted
    # on the out-of-fold scores (only where the accuracy ties the best: it breaks ties).
    classes = task == "classification"
    # Class weights ask the fit for a weighted accuracy (balanced: each class's recall counts alike); the CV scores
    # what they ask for.
    rw = None if not classes or class_weight is None else np.array([class_weight[int(c)] for c in y], np.float64)
    metric = metric_name(task, rw)

    def estimate(c: Candidate) -> str:
        return format_estimate(metric, c.mean, c.std)

    codes = np.eye(n_classes or int(y.max()) + 1)[y] if classes else y
    best, best_out, best_group, best_epochs = None, None, None, []
    family: dict = {}  # stage 2: model -> (its best candidate on the chosen group, out-of-fold outputs, epochs)
    stage2 = False

    def consider(group, model, reg, out, epochs=(), lazy_loss=False, ran=None) -> None:
        """Score one candidate's out-of-fold outputs, add it to the table, keep it if it beats the best so far.
        ``lazy_loss``: skip the log loss (the tie-breaker; a temperature fit each) where the accuracy cannot win.
        ``ran``: the folds run when racing stopped the candidate (scored on those, never kept)."""
        nonlocal best, best_out, best_group, best_epochs
        raced = ran is not None and ran < len(folds)
        cand = Candidate(
            group, model, float(reg), [fold_score(task, y, out, te, rw) for _, te in folds[:ran]], raced=raced
        )
        table.append(cand)
        if raced or (lazy_loss and best is not None and round(cand.mean, 6) < round(best.mean, 6)):
            return
        cand.loss = _loss(task, y, out)
        if stage2 and (model not in family or _better(task, cand, family[model][0])):
            family[model] = (cand, out, list(epochs))
        if _better(task, cand, best):
            best, best_out, best_group, best_epochs = cand, out, group, list(epochs)

    def report(stage: str, raced: int = 0) -> None:
        """One log line: the best so far after ``stage`` ('block group' names the group), the number of its
        candidates that racing stopped, and the time taken."""
        assert best is not None, f"no candidate in stage {stage}"
        if log:
            done = f"{len(groups)} groups" if stage == "block group" else f"{stage} done"
            if raced:
                done += f", {raced} stopped early by racing"
            head = f"block group {best_group}: best" if stage == "block group" else "best so far"
            log(
                f"{head} {describe_model(best.model, best.reg)}, CV {metric} {estimate(best)} ({done}, {time.perf_counter() - t0:.0f} s)"
            )

    # Racing: after each fold but the last, stop a candidate far behind the best so far on the rows run.
    def ran_until_behind(outs, run_fold) -> int:
        """Run folds in order (``run_fold(i, tr, te)`` fills ``outs``' rows ``te``) until every output in ``outs``
        is :func:`behind` the best; the number of folds run."""
        seen = np.zeros(0, np.int64)
        for i, (tr, te) in enumerate(folds):
            run_fold(i, tr, te)
            seen = np.concatenate([seen, te])
            if (
                i + 1 < len(folds)
                and best_out is not None
                and all(behind(task, y, best_out, o, seen, row_weights=rw) for o in outs)
            ):
                return i + 1
        return len(folds)

    raced_groups = 0
    for label, names in groups.items():
        out = np.zeros((len(ridge_alphas), len(y), codes.shape[1] if classes else 1))
        by_fold = ridge_oof_folds(features[:, columns(blocks, names)], codes, folds, ridge_alphas)

        def ridge_fold(i, tr, te):
            out[:, te] = next(by_fold)[1]

        ran = ran_until_behind([o if classes else o[:, 0] for o in out], ridge_fold)
        raced_groups += ran < len(folds)
        for reg, o in zip(ridge_alphas, out):
            # Classes: the raw output is the log-softmax of the scores (same argmax, so the same accuracy).
            consider(label, "ridge", reg, scores_to_log_probs(o) if classes else o[:, 0], lazy_loss=classes, ran=ran)
    assert best is not None and best_group is not None, "at least one block group and regularisation"
    group = best_group
    report("block group", raced_groups)
    x = features[:, columns(blocks, groups[group])]
    stage2 = True
    if "ridge" not in models or (classes and class_weight is not None):  # ridge ignores class weights
        best, best_out = None, None
    else:
        family["ridge"] = (best, best_out, [])

    # Stage 2: logistic regression over C (classes; warm-started along the path) and the Dense head, on that group.
    if classes and "logreg" in models:
        out = np.zeros((len(logreg_cs), len(y), n_classes))

        def logreg_fold(i, tr, te):
            out[:, te] = logreg_path(x[tr], y[tr], x[te], logreg_cs, n_classes, class_weight, seed)

        ran = ran_until_behind(list(out), logreg_fold)
        for reg, o in zip(logreg_cs, out):
            consider(group, "logreg", reg, o, ran=ran)
        report("logistic regression", len(logreg_cs) if ran < len(folds) else 0)
    if "dense" in models:
        if dense is None:
            raise ValueError("models include 'dense' but no Dense head trainer was given")
        stopped = 0
        for l2 in dense_l2s:
            out, epochs = np.zeros((len(y), n_classes) if classes else (len(y),)), []

            def dense_fold(i, tr, te):
                kept = None if copies is None else copies[tr]
                out[te], ep = dense(x[tr], y[tr], x[te], y[te], l2, seed + i, groups=kept)
                epochs.append(ep)

            ran = ran_until_behind([out], dense_fold)
            stopped += ran < len(folds)
            consider(group, "dense", l2, np.log(np.maximum(out, 1e-30)) if classes else out, epochs, ran=ran)
        report("Dense head", stopped)
    assert best is not None and best_out is not None
    if classes and average and len(family) > 1:
        cand, oof, parts = average_of_families(group, family, y, folds, rw)
        table.append(cand)
        if log:
            log(f"average of {', '.join(p['model'] for p in parts)}: CV {metric} {estimate(cand)}")
        return Selection(
            task, cand, table, oof, [], time.perf_counter() - t0, len(folds), parts, copies_count(copies), metric
        )
    return Selection(
        task,
        best,
        table,
        best_out,
        best_epochs,
        time.perf_counter() - t0,
        len(folds),
        copies=copies_count(copies),
        metric=metric,
    )


def average_of_families(group: str, family: dict, y, folds, row_weights=None) -> tuple:
    """``(candidate, out-of-fold log-probabilities, parts)`` of the average of each model family's best candidate
    (``family``: model -> (candidate, out-of-fold log-probabilities, epochs)): each family's outputs calibrated by
    its own temperature, the probabilities averaged; scored as :func:`fold_score` scores (``row_weights``: the rows'
    class weights).

    Why average rather than pick: on a few hundred photos the families' best candidates are within the folds' noise
    of each other, and picking the top one picks its luck as well. Nested cross-validation on the training sets
    (3 seeds; ``bench/results/auto_datasets_nested.json`` against ``auto_datasets_nested_pick.json``): ants/bees
    (245 photos) 95.24 % averaged against 94.42 % picked, higher on every seed; SIGNS (1,080) 99.10 against 99.26 %,
    about 2 photos fewer, where one family (least squares) leads. Families that racing stopped are far behind and
    left out; then a single family remains and nothing is averaged."""
    parts, probs = [], []
    for model in ("ridge", "logreg", "dense"):
        if model not in family:
            continue
        cand, out, epochs = family[model]
        t = fit_temperature(out, y)
        probs.append(np.exp(scores_to_log_probs(out, t)))
        parts.append({"model": model, "reg": cand.reg, "temperature": t, "epochs": epochs, "cv_mean": cand.mean})
    oof = np.log(np.maximum(np.mean(probs, axis=0), 1e-300))
    cand = Candidate(group, "average", 0.0, [fold_score("classification", y, oof, te, row_weights) for _, te in folds])
    cand.loss = _loss("classification", y, oof)
    return cand, oof, parts


__all__ = [
    "Candidate",
    "Selection",
    "select",
    "behind",
    "RACE_Z",
    "candidate_groups",
    "columns",
    "make_folds",
    "fold_score",
    "describe_model",
    "format_estimate",
    "metric_name",
    "average_of_families",
    "selection_rows",
    "MODELS",
]
