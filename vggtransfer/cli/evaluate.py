"""``vggtransfer evaluate``: score a saved model on labelled data or a feature store.

Classifiers: accuracy, scikit-learn's classification report and the confusion matrix (``--png``: as a picture).
Regressors: RMSE and MAE on numeric targets (a CSV ``path,target`` or a regression store; ``--png``: predicted vs
true). The model's kind is read from its folder before TensorFlow is imported, so a wrong pairing is reported at once.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np

from vggtransfer.cli.common import (
    UsageError,
    add_data_args,
    add_runtime_args,
    check_output_file,
    picture_file,
    progress,
    report_bad,
)
from vggtransfer.data.datasets import DATA_HELP


def add_parser(sub, parents):
    """Register ``evaluate``."""
    p = sub.add_parser(
        "evaluate",
        parents=parents,
        help="score a saved model on labelled data (classifiers and regressors)",
        description="Score a saved model on labelled DATA, or on a --store made with the model's feature settings "
        "(head and linear models). Classifiers: accuracy, per-class report, confusion matrix. "
        "Regressors: RMSE and MAE on a CSV with path,target (or a regression store).",
        epilog="example: vggtransfer evaluate --model models/clf hymenoptera_data/val --png confusion.png",
    )
    add_data_args(p, DATA_HELP, required=False)
    p.add_argument("--store", type=Path, help="a feature store instead of DATA")
    p.add_argument("--model", required=True, type=Path, help="a model directory saved by `vggtransfer train`")
    p.add_argument("--split", default="test", help="h5 only: which split to read (default test)")
    p.add_argument("--weights", default=None, help="the VGG weights the model was trained with")
    p.add_argument(
        "--png",
        type=picture_file,
        help="also write a picture: the confusion matrix (classifiers) or predicted vs true (regressors); "
        ".png, .pdf, .svg or .jpg",
    )
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    add_runtime_args(p)
    p.set_defaults(func=run_evaluate, interrupted="interrupted; nothing was written. Rerun the same command")
    return p


def run_evaluate(args) -> int:
    """Check the pairing of model and data, then score and print."""
    from vggtransfer.models.modeldir import read_kind

    if (args.data is None) == (args.store is None):
        raise UsageError("give DATA (or --data DATA) or --store, one of them")
    if args.png is not None:
        check_output_file(args.png, "--png", protect=(args.data, args.store, args.model))
    cfg = read_kind(args.model)
    kind = cfg["kind"]
    if kind == "finetuned" and args.store is not None:
        raise UsageError(
            f"{args.model}: a fine-tuned model computes its own features; it cannot be scored on a "
            "feature store of frozen features. Give DATA instead of --store"
        )
    regressor = kind == "regressor" or cfg.get("task") == "regression"
    if args.data is not None and regressor and Path(args.data).suffix.lower() != ".csv":
        raise UsageError(
            f"{args.data}: {args.model} is a regressor, scored on numeric targets; give a CSV with a "
            "header path,target (class folders and .h5 files hold class labels)"
        )
    store = None
    if args.store is not None:
        from vggtransfer.data.store import open_store

        store = open_store(args.store, lazy=kind == "auto")  # auto reads the rows in chunks
        if (store.task == "regression") != regressor:
            raise UsageError(
                f"{args.store}: holds {store.task} data but {args.model} is a "
                f"{'regressor' if regressor else 'classifier'}"
            )
    from vggtransfer.models.registry import load_model

    model = load_model(args.model, args.weights, precision=args.precision, threads=args.threads)
    if regressor:
        return _evaluate_regressor(args, model, store)
    return _evaluate_classifier(args, model, store)


def _items(n: int) -> str:
    return f"{n} item" if n == 1 else f"{n} items"


def _cv_estimate(model) -> dict:
    """An auto model's cross-validated estimates, saved at training: ``{'cv_mean', 'cv_std', 'folds', 'cv_metric'}``
    and, when trained with ``--nested-cv``, ``{'nested_mean', 'nested_std', 'nested_folds'}``; {} for other models."""
    sel = getattr(model, "selection", None) or {}
    out = {k: sel[k] for k in ("cv_mean", "cv_std", "folds") if k in sel}
    if out and "metric" in sel:
        out["cv_metric"] = sel["metric"]
    nested = sel.get("nested") or {}
    out.update({f"nested_{k}": nested[k] for k in ("mean", "std", "folds") if k in nested})
    return out


def _print_estimates(cv: dict, metric: str) -> None:
    """The training-time estimates beside the test figure: the winner's CV score and, if saved, the nested one, in
    the metric they were scored in (a model trained with class weights: the class-weighted accuracy)."""
    from vggtransfer.models.select import format_estimate

    metric = cv.get("cv_metric", metric)
    name = "RMSE" if metric == "rmse" else metric
    if cv:
        print(
            f"cross-validated estimate at training: {name} "
            f"{format_estimate(metric, cv['cv_mean'], cv['cv_std'])} ({cv['folds']} folds)"
        )
    if "nested_mean" in cv:
        print(
            f"nested cross-validated estimate of the whole procedure: {name} "
            f"{format_estimate(metric, cv['nested_mean'], cv['nested_std'])} ({cv['nested_folds']} outer folds)"
        )


def _seen_in_training(model, ds) -> dict:
    """``{'seen_in_training': N}``: how many items of ``ds`` are files (or in-memory images) the model was trained on,
    by their fingerprints; {} for a model that kept none (other kinds, or trained on rows of features)."""
    kept = getattr(model, "training_fingerprints", None)
    if kept is None:
        return {}
    mine = ds.fingerprints()
    return {"seen_in_training": int(np.isin(mine[mine != b""], kept).sum())}


def _print_seen(seen: dict, n: int) -> None:
    if seen.get("seen_in_training"):
        print(
            f"note: {seen['seen_in_training']} of the {_items(n)} are files the model was trained on (the same "
            "bytes): the figure is partly on photos it has seen"
        )


def _features_of_store(args, model, store):
    return model.predict_store(store, str(args.store))


def _evaluate_regressor(args, model, store) -> int:
    import warnings

    seen: dict = {}
    if store is not None:
        pred, y, failed = _features_of_store(args, model, store), store.labels.astype(np.float64), len(store.errors)
    else:
        from vggtransfer.data.datasets import from_path

        ds = from_path(args.data, args.split, "regression", progress(args))
        report_bad(ds, args)
        seen = _seen_in_training(model, ds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            pred = model.predict(ds.paths, errors="report", progress=progress(args))
        good = np.isfinite(pred)
        pred, y, failed = pred[good], ds.labels[good].astype(np.float64), int((~good).sum())
    if not len(y):
        raise ValueError("no item could be predicted")
    rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
    mae = float(np.mean(np.abs(pred - y)))
    if args.png:
        _save_scatter_png(y, pred, args.png, f"{args.model.name}: RMSE {rmse:.4g} on {_items(len(y))}")
    cv = _cv_estimate(model)
    if args.json:
        figures = {"rmse": rmse, "mae": mae, "n": int(len(y)), "failed": int(failed), **seen, **cv}
        print(json.dumps(figures, allow_nan=False))
    else:
        print(
            f"RMSE {rmse:.4g}, MAE {mae:.4g} on {_items(len(y))}"
            + (f" ({failed} unreadable, left out)" if failed else "")
        )
        _print_seen(seen, len(y) + failed)
        _print_estimates(cv, "rmse")
    return 0


def _evaluate_classifier(args, model, store) -> int:
    from sklearn.metrics import balanced_accuracy_score, classification_report, log_loss

    from vggtransfer.data.splits import class_index_map
    from vggtransfer.models.calibration import expected_calibration_error
    from vggtransfer.models.classifier_api import confusion_matrix
    from vggtransfer.models.linear import format_confusion, save_confusion_png

    classes = list(model.classes)
    seen: dict = {}
    if store is not None:
        to_model = class_index_map(store.label_names, classes, str(args.store))
        probs = _features_of_store(args, model, store)
        y, failed = to_model[store.labels.astype(int)], len(store.errors)
        pred = probs.argmax(1)
    else:
        from vggtransfer.data.datasets import from_path

        ds = from_path(args.data, args.split, "classification", progress(args))
        report_bad(ds, args)
        seen = _seen_in_training(model, ds)
        res = model.evaluate_dataset(ds)
        y, pred, failed = res["y_true"], res["y_pred"], res["failed"]
        probs = res["probabilities"][~np.isnan(res["probabilities"]).any(axis=1)]
    cm = confusion_matrix(y, pred, len(classes))
    acc = float(np.mean(pred == y)) if len(y) else math.nan
    with warnings.catch_warnings():  # a class predicted but absent from the test items is no error here
        warnings.simplefilter("ignore")
        # The mean of the per-class recalls over the classes present: the VGG paper's Caltech figure.
        recall = float(balanced_accuracy_score(y, pred)) if len(y) else math.nan
    ece = expected_calibration_error(probs, y) if len(y) else math.nan
    # The mean negative log-probability of the true class: a proper score of the probabilities, beside the ECE.
    # (float32 rows sum to 1 within rounding only, which scikit-learn warns about: summed in float64 first)
    p64 = np.asarray(probs, np.float64)
    nll = float(log_loss(y, p64 / p64.sum(1, keepdims=True), labels=list(range(len(classes))))) if len(y) else math.nan
    cv = _cv_estimate(model)
    if args.png:
        save_confusion_png(cm, classes, args.png, f"{args.model.name}: accuracy {100 * acc:.2f} %")
    if args.json:
        print(
            json.dumps(
                {
                    "accuracy": None if math.isnan(acc) else acc,
                    "mean_class_recall": None if math.isnan(recall) else recall,
                    "n": int(len(y)),
                    "failed": int(failed),
                    "ece": None if math.isnan(ece) else ece,
                    "log_loss": None if math.isnan(nll) else nll,
                    "classes": classes,
                    "confusion": cm.tolist(),
                    **seen,
                    **cv,
                },
                allow_nan=False,
            )
        )
    else:
        print(
            classification_report(
                y, pred, labels=list(range(len(classes))), target_names=classes, digits=4, zero_division=0
            )
        )
        print(format_confusion(cm, classes))
        print(
            f"accuracy {100 * acc:.2f} % (mean class recall {100 * recall:.2f} %) on {_items(len(y))}"
            + (f" ({failed} unreadable, left out)" if failed else "")
            + f"; expected calibration error {100 * ece:.2f} %, log loss {nll:.4f}"
        )
        _print_seen(seen, len(y) + failed)
        _print_estimates(cv, "accuracy")
    return 0


def _save_scatter_png(y, pred, png, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.scatter(y, pred, s=12, alpha=0.6)
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle=":")
    ax.set(xlabel="true", ylabel="predicted", title=title)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    print(f"wrote {png}", file=sys.stderr)
    return png
