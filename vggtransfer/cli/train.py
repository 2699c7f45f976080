"""``vggtransfer train``: a classifier, regressor, linear model or fine-tuned model from images or a feature store.

Options that do not apply to the chosen recipe or source are refused with an error naming them, never ignored.
Defaults come from :mod:`vggtransfer.models.defaults`, the same values the Python API uses.

The module is over 400 lines because it is one command with four recipes; each option's check sits beside the
recipe that uses it, where a reader of the command looks for it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from vggtransfer.cli.common import (
    UsageError,
    announce_precision,
    check_weights_option,
    explicit,
    fraction,
    hidden_sizes,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    progress,
    report_bad,
)
from vggtransfer.cli.features import add_feature_args, block_spec, check_end_point, classic_features
from vggtransfer.data.datasets import DATA_HELP
from vggtransfer.models import defaults


def folds(text) -> int:
    """A number of cross-validation folds, >= 2."""
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2 folds, got {text!r}")
    return value


REG, CLF, FT = defaults.REGRESSOR, defaults.CLASSIFIER, defaults.FINETUNE

DESCRIPTION = """\
Train a model and save it to --model DIR (only a new path, or an earlier model, is ever written: an existing file
or a folder that is not a vggtransfer model is refused, never replaced).

Recipes:
  auto      the default: block features of the whole image (global avg and max of pool3, pool4, pool5), then
            stratified k-fold cross-validation on the training data chooses the block group, the model
            (logistic regression, the least-squares classifier or the softmax head for classes; ridge or the
            Dense head for targets) and its regularisation; the winner is refit on all of the data and its
            outputs calibrated. The choice and the CV estimate (mean ± std) are printed and saved with the model
  head      a Dense head on one block of frozen features, early-stopped on a held-out split: a classifier for
            labelled data (class folders, SIGNS .h5, CSV path,label), a regressor for CSV targets
  linear    logistic regression with a cross-validated grid search over C, on a feature store (--store)
  finetune  conv layers from --trainable-from onward trained with augmentation (--data only)

Labelled data: class folders, a SIGNS .h5 or a CSV path,label; numeric targets: a CSV path,target with
--task regression. Give --data (images) or --store (features from `vggtransfer extract`; auto, head, linear)."""

EPILOG = """\
examples:
  vggtransfer train --data photos/ --model models/clf
  vggtransfer train --data photos/ --recipe head --model models/head --pooling max --hidden 128
  vggtransfer train --store train.h5 --recipe linear --model models/lin
  vggtransfer train --data photos/ --recipe finetune --trainable-from conv5_1 --model models/ft
  vggtransfer train --data lengths.csv --task regression --model models/len"""


def _both(name: str) -> str:
    """'a (regression) / b (classification) / c (finetune)' for a default of the three head recipes."""

    def fmt(v):
        return ",".join(map(str, v)) if isinstance(v, tuple) else v

    return (
        f"default {fmt(getattr(CLF, name))} (classifier), {fmt(getattr(REG, name))} (regressor), "
        f"{fmt(getattr(FT, name))} (finetune)"
    )


def add_parser(sub, parents):
    """Register ``train``."""
    p = sub.add_parser(
        "train",
        parents=parents,
        help="train a classifier, regressor, linear model or fine-tuned model",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help=DATA_HELP)
    src.add_argument("--store", type=Path, help="an HDF5 feature store made by `vggtransfer extract`")
    p.add_argument("--model", required=True, type=Path, help="output model directory (new, or an earlier model)")
    p.add_argument(
        "--recipe",
        choices=("auto", "head", "linear", "finetune"),
        default="auto",
        help="what to train (default auto; see above)",
    )
    p.add_argument(
        "--folds",
        type=folds,
        default=None,
        help=f"auto: cross-validation folds, >= 2 (default {defaults.AUTO.folds}; fewer where a class has fewer items)",
    )
    p.add_argument(
        "--select-rows",
        type=positive_int,
        default=None,
        help=f"auto: cross-validate on at most N training rows, a stratified sample (default "
        f"{defaults.AUTO.select_rows:,}); the winner is refitted on all of them",
    )
    p.add_argument(
        "--nested-cv",
        action="store_true",
        default=None,
        help="auto: also estimate the whole procedure (selection, refit, calibration) by nested cross-validation, "
        "--folds outer folds: a figure free of the winner's optimism; costs about --folds times selection",
    )
    p.add_argument(
        "--members",
        type=positive_int,
        default=None,
        help=f"auto: the Dense head is refitted as this many independently initialised heads, outputs averaged, "
        f">= 1 (default {defaults.AUTO.members}; 1 for a single head)",
    )
    p.add_argument(
        "--task",
        choices=("classification", "regression"),
        default=None,
        help="CSV only: classification (label column, the default) or regression (target column)",
    )
    p.add_argument("--split", default=None, help="h5 data only: which split to read (default train)")
    val = p.add_argument_group("validation (early stopping; head and finetune; auto cross-validates instead)")
    val.add_argument(
        "--val-data",
        help="a separate validation set: DATA like --data, or a feature store with --store "
        "(default: a seeded stratified --val-fraction of the training data)",
    )
    val.add_argument(
        "--val-fraction",
        type=fraction,
        default=None,
        help=f"fraction held out for early stopping, in [0, 1) (default {defaults.VAL_FRACTION})",
    )
    head = p.add_argument_group("head (head, finetune, and auto's Dense head candidate; --l2 fixes auto's L2 grid)")
    head.add_argument(
        "--hidden",
        type=hidden_sizes,
        default=None,
        metavar="SIZES",
        help=f"hidden Dense sizes, comma-separated, '' for none; {_both('hidden')}",
    )
    head.add_argument("--dropout", type=fraction, default=None, help=f"dropout rate in [0, 1); {_both('dropout')}")
    head.add_argument("--l2", type=non_negative_float, default=None, help=f"L2 weight penalty >= 0; {_both('l2')}")
    head.add_argument(
        "--learning-rate",
        type=positive_float,
        default=None,
        help=f"Adam learning rate of the head, > 0; {_both('learning_rate')}",
    )
    head.add_argument("--epochs", type=positive_int, default=None, help=f"most epochs, >= 1; {_both('epochs')}")
    head.add_argument(
        "--patience",
        type=positive_int,
        default=None,
        help=f"stop after this many epochs without a better validation loss, >= 1; {_both('patience')}",
    )
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the validation split, initialisation, dropout and augmentation (default 0)",
    )
    p.add_argument(
        "--class-weights",
        choices=("none", "balanced"),
        default="none",
        help="'balanced' weights rare classes up (imbalanced folders; classifiers); default none",
    )
    ft = p.add_argument_group("fine-tuning (--recipe finetune)")
    ft.add_argument(
        "--trainable-from",
        choices=("conv3_1", "conv3_2", "conv3_3", "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"),
        default=None,
        metavar="LAYER",
        help=f"first trainable conv layer, conv3_1 .. conv5_3 (default {FT.trainable_from})",
    )
    ft.add_argument(
        "--backbone-learning-rate",
        type=positive_float,
        default=None,
        help=f"Adam learning rate of the trainable conv layers, > 0 (default {FT.backbone_learning_rate})",
    )
    ft.add_argument(
        "--views",
        type=positive_int,
        default=None,
        help=f"augmented views per training image, >= 1 (default {FT.views})",
    )
    add_feature_args(
        p, f"{CLF.pooling} (classifier), {REG.pooling} (regressor), {FT.pooling} (finetune); with --store, the store's"
    )
    p.set_defaults(
        func=run_train,
        interrupted="interrupted; nothing was saved to --model. Rerun the same command: it continues the "
        "features already extracted (kept beside --model until the model is saved)",
    )
    return p


HEAD_OPTIONS = ("hidden", "dropout", "l2", "learning_rate", "epochs", "patience", "val_fraction", "val_data")
FINETUNE_OPTIONS = ("trainable_from", "backbone_learning_rate", "views")
FEATURE_OPTIONS = ("arch", "end_point", "pooling", "image_size")


def check_options(args) -> None:
    """Refuse options that the recipe or the source would ignore, naming them."""

    def refuse(names, why):
        given = [f"--{n.replace('_', '-')}" for n in names if explicit(args, n)]
        if given:
            raise UsageError(f"{', '.join(given)}: {why}")

    if args.recipe != "finetune":
        refuse(FINETUNE_OPTIONS, f"fine-tuning options; they apply to --recipe finetune only (not {args.recipe})")
    if args.recipe != "auto":
        refuse(("folds", "members", "select_rows", "nested_cv"), f"applies to --recipe auto only (not {args.recipe})")
        refuse(
            ("scales", "flip", "mirror"),
            f"block features are --recipe auto's (not {args.recipe}); {args.recipe} reads one "
            "block: --end-point, --pooling, --image-size",
        )
    else:
        refuse(
            ("val_data", "val_fraction"),
            "--recipe auto chooses and estimates by cross-validation on the training "
            "data (--folds); score held-out data with `vggtransfer evaluate`",
        )
        if args.data is not None:
            classic_features(args)
    if args.recipe == "linear":
        refuse(
            HEAD_OPTIONS,
            "the linear recipe chooses C by cross-validation on the store; these head options do "
            "not apply (score a test set with `vggtransfer evaluate`)",
        )
        if args.data is not None:
            raise UsageError("--recipe linear trains on a feature store: run `vggtransfer extract` and give --store")
    if args.recipe == "finetune":
        if args.store is not None:
            raise UsageError("--recipe finetune trains on images: give --data, not --store")
        refuse(("end_point",), "fine-tuning always reads pool5 of the fine-tuned layers")
        if args.precision == "bf16":
            raise UsageError("--precision bf16 is for frozen features (auto, head, linear); fine-tuning trains in fp32")
    if explicit(args, "val_data") and explicit(args, "val_fraction"):
        raise UsageError("--val-data and --val-fraction: give one (a separate validation set, or a fraction held out)")
    if args.store is not None:
        refuse(("split",), "applies to --data FILE.h5 only")
        refuse(("scales", "flip", "mirror"), "stored features cannot change; extract a store with them")
    elif args.split is not None and Path(args.data).suffix.lower() not in (".h5", ".hdf5"):
        raise UsageError(f"--split: applies to .h5 data only, not {args.data}")
    if args.class_weights != "none" and args.task == "regression":
        raise UsageError("--class-weights: applies to classifiers, not to --task regression")


def _store_conflicts(args, cfg: dict) -> None:
    """Feature options given with --store must match the store (they cannot change stored features)."""
    wanted = {"arch": args.arch, "end_point": args.end_point, "pooling": args.pooling, "image_size": args.image_size}
    diff = [
        f"--{k.replace('_', '-')} {v} (the store has {cfg.get(k)!r})"
        for k, v in wanted.items()
        if v is not None and v != cfg.get(k)
    ]
    if diff:
        raise UsageError(
            f"{args.store}: {'; '.join(diff)}. Stored features cannot change: leave the option out, or "
            "extract a new store with it"
        )


def _fit_args(args, recipe_defaults) -> dict:
    return {
        "epochs": args.epochs or recipe_defaults.epochs,
        "patience": args.patience or recipe_defaults.patience,
        "seed": args.seed,
        "progress": progress(args),
    }


def _head_kwargs(args, d) -> dict:
    return {
        "hidden": d.hidden if args.hidden is None else args.hidden,
        "dropout": d.dropout if args.dropout is None else args.dropout,
        "l2": d.l2 if args.l2 is None else args.l2,
        "learning_rate": d.learning_rate if args.learning_rate is None else args.learning_rate,
    }


def run_train(args) -> int:
    """Check everything that can be checked without TensorFlow, then train, save, and print one summary line."""
    from vggtransfer.models.modeldir import check_model_target

    check_options(args)
    protect = [p for p in (args.data, args.val_data, args.store) if p is not None]
    check_model_target(args.model, protect=protect)
    check_weights_option(args)
    cw = None if args.class_weights == "none" else "balanced"
    t0 = time.perf_counter()
    if args.store is not None:
        return _train_from_store(args, cw, protect, t0)

    from vggtransfer.data.datasets import from_path

    task = args.task or "classification"
    split = args.split or "train"
    ds = from_path(args.data, split, task, progress(args))
    report_bad(ds, args)
    ds.check_every_class(min_items=defaults.CV_MIN_PER_CLASS if args.recipe == "auto" else 1)
    val = None
    if args.val_data:
        val_split = "test" if str(args.val_data).lower().endswith((".h5", ".hdf5")) else split
        val = from_path(args.val_data, val_split, task, progress(args))
        report_bad(val, args, "(val) ")
    arch = args.arch or "vgg16"
    if args.end_point:
        check_end_point(arch, args.end_point)
    if cw and ds.task != "classification":
        raise UsageError("--class-weights: applies to classifiers, not to regression targets")
    val_fraction = defaults.VAL_FRACTION if args.val_fraction is None else args.val_fraction
    cache_dir = None if args.recipe == "finetune" else features_cache(args.model)
    if args.recipe == "auto":
        model = _auto_model(args, ds.task, ds.classes, arch)
        report = model.train_dataset(
            ds,
            seed=args.seed,
            progress=progress(args),
            class_weights=cw,
            log=_log(args),
            cache_dir=cache_dir,
            nested=_nested(args),
        )
        for e in report.skipped:
            print(f"skipped {e}", file=sys.stderr)
        return _save_auto(args, model, report, protect, t0, cache_dir)
    if args.recipe == "finetune":
        from vggtransfer.models.finetune import FineTunedClassifier

        if ds.task != "classification":
            raise UsageError("--recipe finetune trains a classifier; regression targets take --recipe head")
        model = FineTunedClassifier(
            args.weights,
            classes=ds.classes,
            arch=arch,
            trainable_from=args.trainable_from or FT.trainable_from,
            image_size=args.image_size or defaults.IMAGE_SIZE,
            pooling=args.pooling or FT.pooling,
            backbone_learning_rate=args.backbone_learning_rate or FT.backbone_learning_rate,
            batch_size=args.batch_size or FT.batch_size,
            threads=args.threads,
            **_head_kwargs(args, FT),
        )
        report = model.train_dataset(
            ds,
            val=val,
            val_fraction=val_fraction,
            views=args.views or FT.views,
            class_weights=cw,
            **_fit_args(args, FT),
        )
    else:
        d = defaults.for_recipe("head", ds.task)
        model = _head_model(
            args,
            ds.task,
            ds.classes,
            arch,
            args.end_point or d.end_point,
            args.pooling or d.pooling,
            args.image_size or defaults.IMAGE_SIZE,
            d,
        )
        report = model.train_dataset(
            ds,
            val=val,
            val_fraction=val_fraction,
            class_weights=cw,
            cache_dir=cache_dir,
            log=_log(args),
            **_fit_args(args, d),
        )
    for e in report.skipped:
        print(f"skipped {e}", file=sys.stderr)
    return _save_and_report(args, model, report, protect, t0, cache_dir)


def _train_from_store(args, cw, protect, t0) -> int:
    from vggtransfer.data.store import open_store

    # auto reads the rows it needs in chunks (a store larger than memory trains); the other recipes load them
    store = open_store(args.store, lazy=args.recipe == "auto")
    cfg = store.config
    _store_conflicts(args, cfg)
    if args.task is not None and args.task != store.task:
        raise UsageError(f"--task {args.task}: the store {args.store} holds {store.task} data")
    if "features" in cfg and args.recipe != "auto":
        raise UsageError(
            f"{args.store}: holds block features (made by `vggtransfer extract` without --end-point/"
            f"--pooling/--image-size), which --recipe {args.recipe} does not read; use --recipe auto, or "
            "extract a classic store with --end-point pool5 --pooling avg"
        )
    if args.recipe == "auto":
        model = _auto_model(args, store.task, store.label_names, cfg["arch"])
        report = model.train_store(
            store, seed=args.seed, progress=progress(args), class_weights=cw, log=_log(args), nested=_nested(args)
        )
        return _save_auto(args, model, report, protect, t0)
    if args.recipe == "linear":
        from vggtransfer.models.linear import LinearModel

        if store.task != "classification":
            raise UsageError(
                f"{args.store}: the linear recipe is a classifier; this store holds regression targets "
                "(use --recipe head)"
            )
        model = LinearModel.fit(store, seed=args.seed, class_weight=cw, weights_file=str(args.weights or ""))
        model.save(args.model, protect=protect)
        print(
            f"{args.model}: logistic regression {model.cv_results['best_params']}, cross-validated accuracy "
            f"{100 * model.cv_results['best_cv_accuracy']:.2f} % ({time.perf_counter() - t0:.0f} s)"
        )
        return 0
    if cw and store.task != "classification":
        raise UsageError("--class-weights: applies to classifiers, not to regression targets")
    val_store = open_store(args.val_data) if args.val_data else None
    if val_store is not None:
        from vggtransfer.data.store import FeatureStoreMismatch, compare_config

        diff = compare_config(val_store.config, cfg)
        if diff:
            raise FeatureStoreMismatch(args.val_data, diff)
    d = defaults.for_recipe("head", store.task)
    model = _head_model(
        args, store.task, store.label_names, cfg["arch"], cfg["end_point"], cfg["pooling"], cfg["image_size"], d
    )
    val_fraction = defaults.VAL_FRACTION if args.val_fraction is None else args.val_fraction
    report = model.train_store(
        store, val_store=val_store, val_fraction=val_fraction, class_weights=cw, **_fit_args(args, d)
    )
    return _save_and_report(args, model, report, protect, t0)


def features_cache(model_path: Path) -> Path:
    """Where ``train --data`` keeps the features it has extracted until the model is saved: a hidden folder beside
    ``--model`` (``models/.clf.features/``). A killed run continues from it when rerun (and says so); it is removed
    after the save."""
    return model_path.parent / f".{model_path.name}.features"


def _done(cache_dir) -> None:
    if cache_dir is not None:
        shutil.rmtree(cache_dir, ignore_errors=True)


def _save_and_report(args, model, report, protect, t0, cache_dir=None) -> int:
    model.save(args.model, protect=protect)
    _done(cache_dir)
    h = report.history
    metric = h.best_val_metric
    shown = f"{100 * metric:.2f} %" if h.metric_name == "accuracy" else f"{metric:.4g}"
    print(
        f"{args.model}: best epoch {h.best_epoch} of {h.stopped_epoch}, validation {h.metric_name} "
        f"{shown} ({time.perf_counter() - t0:.0f} s)"
    )
    return 0


def _log(args):
    """Selection progress lines on stderr (none with --quiet)."""
    if getattr(args, "quiet", False):
        return None
    from vggtransfer.models.auto import log_to_stderr

    return log_to_stderr


def _auto_model(args, task, classes, arch):
    from vggtransfer.features.spec import FeatureSpec
    from vggtransfer.models.auto import AutoClassifier, AutoRegressor

    if args.data is not None and classic_features(args):
        if args.end_point:
            check_end_point(arch, args.end_point)
        if args.pooling == "flatten":
            raise UsageError("--pooling flatten: --recipe auto pools globally (avg or max); flatten is --recipe head's")
        spec = FeatureSpec.classic(
            args.end_point or defaults.CLASSIFIER.end_point,
            args.pooling or defaults.STORE_POOLING,
            args.image_size or defaults.IMAGE_SIZE,
        )
    else:
        spec = block_spec(args, task)
    announce_precision(args, spec)
    kwargs = dict(
        features=spec,
        arch=arch,
        folds=args.folds or defaults.AUTO.folds,
        members=args.members or defaults.AUTO.members,
        select_rows=args.select_rows or defaults.AUTO.select_rows,
        hidden=args.hidden,
        dropout=args.dropout,
        learning_rate=args.learning_rate,
        l2s=args.l2,
        epochs=args.epochs,
        patience=args.patience,
        precision=args.precision,
        threads=args.threads,
        batch_size=args.batch_size,
    )
    if task == "classification":
        return AutoClassifier(args.weights, classes=classes, **kwargs)
    return AutoRegressor(args.weights, **kwargs)


def _save_auto(args, model, report, protect, t0, cache_dir=None) -> int:
    model.save(args.model, protect=protect)
    _done(cache_dir)
    print(f"{args.model}: {report.describe()} ({time.perf_counter() - t0:.0f} s)")
    if report.describe_nested():
        print(f"{args.model}: {report.describe_nested()}")
    return 0


def _nested(args) -> int:
    """``--nested-cv``: the outer folds of the nested estimate (``--folds``), or 0 for none."""
    return (args.folds or defaults.AUTO.folds) if args.nested_cv else 0


def _head_model(args, task, classes, arch, end_point, pooling, image_size, d):
    from vggtransfer.models.classifier import VggClassifier, VggRegressor

    announce_precision(args)
    common = dict(
        arch=arch,
        end_point=end_point,
        pooling=pooling,
        image_size=image_size,
        batch_size=args.batch_size,
        precision=args.precision,
        threads=args.threads,
        **_head_kwargs(args, d),
    )
    if task == "classification":
        return VggClassifier(args.weights, classes=classes, **common)
    return VggRegressor(args.weights, **common)


__all__ = ["add_parser", "run_train", "check_options"]
