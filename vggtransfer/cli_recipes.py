"""The recipe subcommands: ``extract``, ``train``, ``evaluate``, ``predict``; ``cli.py`` registers them.

Each handler returns an exit code: 0 success, 1 some images could not be predicted, 2 a usage or data error (printed
as ``error: <message>`` on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from .images import ImageError

DATA_HELP = ("a folder of class folders (DATA/<class>/<image>), a SIGNS-style .h5 file "
             "({split}_set_x, {split}_set_y, list_classes) or a .csv with a header (path,label or path,target)")


def _reports_errors(func):
    @functools.wraps(func)
    def wrapper(args) -> int:
        from .weights import WeightsError

        try:
            return func(args)
        except (ValueError, OSError, KeyError, WeightsError) as exc:  # ModelError, DatasetError, ... are ValueErrors
            msg = str(exc) if not isinstance(exc, KeyError) else f"missing {exc}"
            print(f"error: {msg}", file=sys.stderr)
            return 2

    return wrapper


def load_dataset(path, split: str = "train", task: str = "classification"):
    """A Dataset from a folder, an h5 file or a CSV (chosen by what ``path`` is)."""
    from . import datasets

    path = Path(path)
    if path.is_dir():
        return datasets.from_folder(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.suffix.lower() in (".h5", ".hdf5"):
        return datasets.from_signs_h5(path, split)
    if path.suffix.lower() == ".csv":
        return datasets.from_csv(path, task=task)
    raise ValueError(f"{path}: expected {DATA_HELP}")


def _report_bad(ds, label: str = "") -> None:
    for b in ds.bad:
        print(f"skipped {label}{b}", file=sys.stderr)


def _add_features_args(p, defaults_note: str = ""):
    g = p.add_argument_group("features" + defaults_note)
    g.add_argument("--weights", default=None,
                   help="VGG conv weights .npy (default: $VGGTRANSFER_WEIGHTS, ./weights, the cache; "
                        "see `vggtransfer fetch-weights`)")
    g.add_argument("--arch", choices=("vgg16", "vgg19"), default="vgg16", help="architecture (default vgg16)")
    g.add_argument("--end-point", default="pool5", help="layer whose output is the feature (default pool5)")
    g.add_argument("--pooling", choices=("flatten", "max", "avg"), default="avg",
                   help="flatten the map, or global max / average pooling (default avg)")
    g.add_argument("--image-size", type=int, default=224, help="input side in pixels (default 224)")
    _add_runtime_args(g)


def _add_runtime_args(g):
    g.add_argument("--batch-size", type=int, default=None,
                   help="images per conv batch (default: chosen by input size, 16 at 224 px)")
    g.add_argument("--threads", type=int, default=None, help="TensorFlow intra-op threads (default: all cores)")
    g.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: convolutions in bfloat16 via oneDNN, about 2x faster on CPUs with AVX512-BF16/AMX; "
                        "falls back to fp32 with a warning elsewhere (default fp32)")


# --- extract ----------------------------------------------------------------------------------------------------
def add_extract_parser(sub):
    p = sub.add_parser(
        "extract", help="compute the features of a data set into an HDF5 feature store (resumable)",
        description="Extract frozen VGG features of every item of DATA into an HDF5 store: features, labels, label "
                    "names and source paths, written in chunks (works for data larger than memory). If interrupted "
                    "(even kill -9), rerun the same command: it continues where it stopped. The store records the "
                    "weights, end point, pooling, input size and preprocessing; reusing it with other settings is "
                    "refused.",
        epilog="example: vggtransfer extract hymenoptera_data/train --store train.h5 --pooling avg")
    p.add_argument("data", help=DATA_HELP)
    p.add_argument("--store", required=True, type=Path, help="the HDF5 file to write (or resume)")
    p.add_argument("--split", default="train", help="h5 only: which {split}_set_x/_y to read (default train)")
    p.add_argument("--task", choices=("classification", "regression"), default="classification",
                   help="CSV only: label column (classification) or target column (regression)")
    p.add_argument("--chunk-rows", type=int, default=256, help="rows buffered per write (default 256)")
    _add_features_args(p)
    p.set_defaults(func=run_extract)
    return p


@_reports_errors
def run_extract(args) -> int:
    from .features import FeatureExtractor
    from .store import build_store, store_status

    ds = load_dataset(args.data, args.split, args.task)
    _report_bad(ds)
    t0 = time.perf_counter()
    with FeatureExtractor(_weights(args.weights, args.arch), arch=args.arch, end_point=args.end_point,
                          pooling=args.pooling, image_size=args.image_size, batch_size=args.batch_size,
                          precision=args.precision, threads=args.threads) as fx:
        build_store(args.store, ds, fx, chunk_rows=args.chunk_rows)
    done, total = store_status(args.store)
    print(f"{args.store}: {done}/{total} items, {len(ds.classes) or 'regression'} "
          f"{'classes' if ds.classes else ''} ({time.perf_counter() - t0:.0f} s)")
    return 0


def _weights(path, arch):
    from .weight_sources import resolve_weights

    return resolve_weights(path, arch=arch)


# --- train ------------------------------------------------------------------------------------------------------
def add_train_parser(sub):
    p = sub.add_parser(
        "train", help="train a classifier, regressor, linear model or fine-tuned model",
        description="Train a model and save it to --model DIR. Recipes: 'head' (default) = a Dense head on frozen "
                    "features (classifier for labelled data, regressor for CSV targets); 'linear' = logistic "
                    "regression with a grid search over C on a feature store; 'finetune' = conv layers from "
                    "--trainable-from onward trained with augmentation. Give --data (images) or --store (features "
                    "from `vggtransfer extract`; head and linear only).",
        epilog="examples:\n"
               "  vggtransfer train --data photos/ --model models/clf --pooling max --hidden 128\n"
               "  vggtransfer train --store train.h5 --recipe linear --model models/lin\n"
               "  vggtransfer train --data photos/ --recipe finetune --trainable-from conv5_1 --model models/ft\n"
               "  vggtransfer train --data lengths.csv --task regression --model models/len",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help=DATA_HELP)
    src.add_argument("--store", type=Path, help="an HDF5 feature store made by `vggtransfer extract`")
    p.add_argument("--model", required=True, type=Path, help="output model directory")
    p.add_argument("--recipe", choices=("head", "linear", "finetune"), default="head")
    p.add_argument("--task", choices=("classification", "regression"), default=None,
                   help="classification (default: label column of a CSV) or regression (target column of a CSV)")
    p.add_argument("--split", default="train", help="h5 only: which split to read (default train)")
    p.add_argument("--val-data", help="a separate validation set (default: a seeded stratified --val-fraction)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="held out for early stopping (default 0.2)")
    p.add_argument("--hidden", default="256", help="hidden Dense sizes, comma-separated, '' for none (default 256)")
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--l2", type=float, default=1e-3)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=None, help="default 300 (head), 10 (finetune)")
    p.add_argument("--patience", type=int, default=None, help="early stopping patience (default 30 / 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class-weights", choices=("none", "balanced"), default="none",
                   help="'balanced' weights rare classes up (imbalanced folders)")
    ft = p.add_argument_group("fine-tuning")
    ft.add_argument("--trainable-from", default="conv5_1", help="first trainable conv layer (default conv5_1)")
    ft.add_argument("--backbone-learning-rate", type=float, default=1e-5)
    ft.add_argument("--views", type=int, default=4, help="augmented views per training image (default 4)")
    _add_features_args(p)
    p.set_defaults(func=run_train)
    return p


@_reports_errors
def run_train(args) -> int:
    from .store import open_store

    hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    cw = None if args.class_weights == "none" else "balanced"
    t0 = time.perf_counter()
    if args.store is not None:
        if args.recipe == "finetune":
            raise ValueError("--recipe finetune trains on images: give --data, not --store")
        store = open_store(args.store)
        cfg = store.config
        if args.recipe == "linear":
            from .linear import LinearModel

            model = LinearModel.fit(store, seed=args.seed, class_weight=cw, weights_file=str(args.weights or ""))
            model.save(args.model)
            print(f"{args.model}: logistic regression {model.cv_results['best_params']}, cross-validated accuracy "
                  f"{100 * model.cv_results['best_cv_accuracy']:.2f} % ({time.perf_counter() - t0:.0f} s)")
            return 0
        model = _head_model(args, store.task, store.label_names, cfg["arch"], cfg["end_point"], cfg["pooling"],
                            cfg["image_size"], hidden)
        if store.task == "classification":
            report = model.train_store(store, val_fraction=args.val_fraction, class_weights=cw, **_fit(args, 300, 30))
        else:
            report = model.train_on_features(store.features, store.labels, val_fraction=args.val_fraction,
                                             **_fit(args, 300, 30))
    else:
        task = args.task or "classification"
        ds = load_dataset(args.data, args.split, task)
        _report_bad(ds)
        val = None
        if args.val_data:
            val = load_dataset(args.val_data, "test" if str(args.val_data).endswith(".h5") else args.split, task)
            _report_bad(val, "(val) ")
        if args.recipe == "linear":
            raise ValueError("--recipe linear trains on a feature store: run `vggtransfer extract` and give --store")
        if args.recipe == "finetune":
            from .finetune import FineTunedClassifier

            if args.precision != "fp32":
                raise ValueError("--precision bf16 is for frozen features (head, linear); fine-tuning trains in fp32")

            model = FineTunedClassifier(args.weights, classes=ds.classes, arch=args.arch,
                                        trainable_from=args.trainable_from, image_size=args.image_size,
                                        pooling=args.pooling, hidden=hidden, dropout=args.dropout, l2=args.l2,
                                        learning_rate=args.learning_rate,
                                        backbone_learning_rate=args.backbone_learning_rate,
                                        batch_size=args.batch_size or 16, threads=args.threads)
            report = model.train_dataset(ds, val=val, val_fraction=args.val_fraction, views=args.views,
                                         class_weights=cw, **_fit(args, 10, 3))
        else:
            model = _head_model(args, ds.task, ds.classes, args.arch, args.end_point, args.pooling,
                                args.image_size, hidden)
            if ds.task == "classification":
                report = model.train_dataset(ds, val=val, val_fraction=args.val_fraction, class_weights=cw,
                                             **_fit(args, 300, 30))
            else:
                report = model.train(ds.paths, ds.labels, val_fraction=args.val_fraction, **_fit(args, 300, 30))
        for e in report.skipped:
            print(f"skipped {e}", file=sys.stderr)
    model.save(args.model)
    h = report.history
    metric = h.val_metric[h.best_epoch] if h.best_epoch >= 0 else float("nan")
    shown = f"{100 * metric:.2f} %" if h.metric_name == "accuracy" else f"{metric:.4g}"
    print(f"{args.model}: best epoch {h.best_epoch + 1} of {h.stopped_epoch + 1}, validation {h.metric_name} "
          f"{shown} ({time.perf_counter() - t0:.0f} s)")
    return 0


def _fit(args, epochs, patience) -> dict:
    return {"epochs": args.epochs or epochs, "patience": args.patience or patience, "seed": args.seed,
            "progress": sys.stderr.isatty()}


def _head_model(args, task, classes, arch, end_point, pooling, image_size, hidden):
    from .classifier import VggClassifier, VggRegressor

    common = dict(arch=arch, end_point=end_point, pooling=pooling, image_size=image_size, hidden=hidden,
                  dropout=args.dropout, l2=args.l2, learning_rate=args.learning_rate, batch_size=args.batch_size,
                  precision=args.precision, threads=args.threads)
    if task == "classification":
        return VggClassifier(args.weights, classes=classes, **common)
    return VggRegressor(args.weights, **common)


# --- evaluate ---------------------------------------------------------------------------------------------------
def add_evaluate_parser(sub):
    p = sub.add_parser(
        "evaluate", help="accuracy, classification report and confusion matrix of a classifier on labelled data",
        description="Score a saved classifier (head, linear or fine-tuned) on labelled DATA (or a --store made "
                    "with the model's feature settings; head and linear models). Regressors report the RMSE.",
        epilog="example: vggtransfer evaluate --model models/clf hymenoptera_data/val --png confusion.png")
    p.add_argument("data", nargs="?", help=DATA_HELP)
    p.add_argument("--store", type=Path, help="a feature store instead of DATA")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--split", default="test", help="h5 only: which split to read (default test)")
    p.add_argument("--weights", default=None, help="the VGG weights the model was trained with")
    _add_runtime_args(p)
    p.add_argument("--png", type=Path, help="also write the confusion matrix as a PNG")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run_evaluate)
    return p


@_reports_errors
def run_evaluate(args) -> int:
    from sklearn.metrics import classification_report

    from .classifier import confusion_matrix, load_model
    from .linear import format_confusion, save_confusion_png

    if (args.data is None) == (args.store is None):
        raise ValueError("give DATA or --store (one of them)")
    model = load_model(args.model, args.weights, precision=args.precision, threads=args.threads)
    if not hasattr(model, "classes"):
        ds = load_dataset(args.data, args.split, "regression")
        _report_bad(ds)
        pred = model.predict(ds.paths, errors="report")
        good = ~np.isnan(pred)
        rmse = float(np.sqrt(np.mean((pred[good] - ds.labels[good]) ** 2)))
        print(json.dumps({"rmse": rmse, "n": int(good.sum())}) if args.json else f"RMSE {rmse:.4g} on {good.sum()} images")
        return 0
    classes = list(model.classes)
    if args.store is not None:
        from .store import compare_config, open_store, FeatureStoreMismatch

        store = open_store(args.store)
        diff = compare_config(store.config, model.config)
        if diff:
            raise FeatureStoreMismatch(args.store, diff)
        if not hasattr(model, "head") and not hasattr(model, "pipeline"):
            raise ValueError("a fine-tuned model cannot be scored on frozen stored features; give DATA")
        probs = model.predict_features(store.features) if hasattr(model, "pipeline") else \
            model.head.predict_features(model.session, store.features)
        y, failed = store.labels.astype(int), len(store.errors)
        pred = probs.argmax(1)
    else:
        ds = load_dataset(args.data, args.split, "classification")
        _report_bad(ds)
        res = model.evaluate_dataset(ds)
        y, pred, failed = res["y_true"], res["y_pred"], res["failed"]
    cm = confusion_matrix(y, pred, len(classes))
    acc = float(np.mean(pred == y)) if len(y) else math.nan
    if args.png:
        save_confusion_png(cm, classes, args.png, f"{args.model.name}: accuracy {100 * acc:.2f} %")
    if args.json:
        print(json.dumps({"accuracy": acc, "n": int(len(y)), "failed": int(failed), "classes": classes,
                          "confusion": cm.tolist()}))
    else:
        print(classification_report(y, pred, labels=list(range(len(classes))), target_names=classes, digits=4,
                                    zero_division=0))
        print(format_confusion(cm, classes))
        print(f"accuracy {100 * acc:.2f} % on {len(y)} items" + (f" ({failed} unreadable, left out)" if failed else ""))
    return 0


# --- predict ----------------------------------------------------------------------------------------------------
def add_predict_parser(sub):
    p = sub.add_parser(
        "predict", help="predict image files with a saved model (any kind)",
        description="Predict each IMAGE with a saved model. Regressor: 'path<TAB>value'. Classifier (head, "
                    "linear, fine-tuned): 'path<TAB>class<TAB>probability', the --top-k best classes per image. A "
                    "file that cannot be read prints 'path<TAB>error: ...' on stderr; the others are still "
                    "predicted, and the exit code is 1.",
        epilog="example: vggtransfer predict --model models/clf photo1.jpg photo2.png --top-k 2")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", required=True, type=Path, help="a model directory saved by `vggtransfer train`")
    p.add_argument("--top-k", type=int, default=1, help="classes to show per image (classifiers; default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON list of {path, prediction|top_k, error}")
    p.add_argument("--weights", default=None, help="the VGG weights the model was trained with")
    _add_runtime_args(p)
    p.set_defaults(func=run_predict)
    return p


@_reports_errors
def run_predict(args) -> int:
    import warnings

    from .classifier import load_model

    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    model = load_model(args.model, args.weights, precision=args.precision, threads=args.threads)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if hasattr(model, "predict_top_k"):
            for path, res in zip(args.images, model.predict_top_k(args.images, args.top_k)):
                if isinstance(res, ImageError):
                    rows.append({"path": path, "top_k": None, "error": res.reason})
                else:
                    rows.append({"path": path, "top_k": [{"class": c, "probability": p} for c, p in res],
                                 "error": None})
        else:
            values = model.predict(args.images, errors="report")
            errors = {e.path: e.reason for e in model.last_errors}
            for path, v in zip(args.images, values):
                rows.append({"path": path, "prediction": None if np.isnan(v) else float(v),
                             "error": errors.get(path, None if not np.isnan(v) else "could not be predicted")})
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            if r["error"]:
                print(f"{r['path']}\terror: {r['error']}", file=sys.stderr)
            elif "top_k" in r:
                for t in r["top_k"]:
                    print(f"{r['path']}\t{t['class']}\t{t['probability']:.4f}")
            else:
                print(f"{r['path']}\t{r['prediction']:.6g}")
    return 1 if any(r["error"] for r in rows) else 0
