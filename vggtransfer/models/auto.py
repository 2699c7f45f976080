"""``--recipe auto``: richer frozen features, a cross-validated choice of what to fit on them, calibrated outputs.

:class:`AutoClassifier` and :class:`AutoRegressor` extract several feature blocks in one pass
(:class:`~vggtransfer.features.blocks.BlockExtractor`), choose block group x model x regularisation by stratified k-fold
cross-validation on the training data only (:func:`vggtransfer.models.select.select`), refit the winner on every training
item and calibrate its outputs from the out-of-fold predictions. For classes the winner is, where more than one model
family survives racing, the average of each family's best (:func:`vggtransfer.models.select.average_of_families`),
each part refitted and calibrated on its own. A Dense head winner is refitted as a deep ensemble:
``members`` (default 5) copies of the head, each initialised on its own and trained on its own loss, outputs averaged
(cross-validation scores one head, so selection costs what it did; the refit costs about ``members`` fits, in one
graph). Its effect on the main job's 5 splits: README, "The main job's figures". ``train`` reports the choice and
the CV estimate (mean ± std over folds); both are saved in ``vggtransfer.json`` beside the model, with the nested
CV estimate of the whole procedure when asked for (``nested=``, ``train --nested-cv``).

Models on disk (``kind: auto``): ``vggtransfer.json`` (feature spec, chosen blocks, model, calibration, CV table) and
``linear.npz`` (the linear models' coefficients: no pickle) and/or ``head.ckpt.*`` (the Dense head, saved by a
Saver), as the model or an average's parts need them. The card's :class:`~vggtransfer.models.vgg16.Vgg16` is an :class:`AutoRegressor` whose model is always its Dense
head (fc6 256 ReLU + 1 output; each ensemble member has that shape, ``members=1`` keeps one); auto then chooses its
input block group and its L2 weight.

The module is over 400 lines because :class:`AutoModel` is one unit: its training entry points, the selection, the
refit, the calibration and the persistence share the fitted state; the pieces that stand alone are apart
(:mod:`~vggtransfer.models.select`, :mod:`~vggtransfer.models.dense`).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vggtransfer import __version__
from vggtransfer.core.env import PRECISIONS
from vggtransfer.data.datasets import Dataset, fingerprints
from vggtransfer.data.images import ImageError
from vggtransfer.data.splits import (
    check_data_classes,
    encode_targets,
    infer_classes,
    resolve_class_weights,
    split_indices,
    training_items,
)
from vggtransfer.data.store import StoredFeatures, StoreRows, extract_resumable
from vggtransfer.features.blocks import BlockExtractor, FeatureSpec, normalise_blocks
from vggtransfer.features.extractor import predict_paths
from vggtransfer.models import defaults
from vggtransfer.models.base import Model
from vggtransfer.models.calibration import (
    apply_regression_calibration,
    apply_temperature,
    fit_regression_calibration,
    fit_temperature,
    scores_to_log_probs,
)
from vggtransfer.models.classifier_api import ClassifierAPI
from vggtransfer.models.dense import DenseHead
from vggtransfer.models.folds import copies_count, copy_groups, quantile_bins
from vggtransfer.models.heads import HeadSpec, History
from vggtransfer.models.modeldir import (
    CHECKPOINT,
    MODEL_FILE,
    ModelError,
    checkpoint_files_missing,
    load_model_json,
    write_model_dir,
)
from vggtransfer.models.nested import nested_estimate
from vggtransfer.models.select import (
    MODELS,
    candidate_groups,
    columns,
    describe_model,
    format_estimate,
    select,
    selection_rows,
)
from vggtransfer.models.solvers import fit_logreg, fit_ridge, logreg_arrays
from vggtransfer.nets.cfg import ARCHITECTURES, end_point_names, get_cfg
from vggtransfer.weights.sources import resolve_weights

AUTO = defaults.AUTO
LINEAR_FILE = "linear.npz"
#: The training items' fingerprints (:func:`vggtransfer.data.datasets.fingerprints`), where training read files or
#: in-memory images: ``evaluate`` says how many of its items the model was trained on. Optional.
FINGERPRINTS_FILE = "training_fingerprints.npy"
AUTO_FORMAT = 1


@dataclass
class AutoReport:
    """What ``train`` did: the selection (choice, CV estimate, table), the items skipped, the time per phase."""

    selection: dict
    calibration: dict
    skipped: list = field(default_factory=list)
    history: History | None = None  # the final Dense head fit, when the Dense head won
    train_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    val_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    seconds_features: float = 0.0
    seconds_select: float = 0.0
    seconds_refit: float = 0.0
    members: int = 1  # the refitted Dense head's ensemble members (1 for the linear models)
    seconds_nested: float = 0.0  # the nested cross-validation's, when asked for (``selection['nested']``)

    def describe(self) -> str:
        """One line: the choice and the CV estimate."""
        s = self.selection
        metric = s["metric"]
        value = format_estimate(metric, s["cv_mean"], s["cv_std"])

        if s["model"] == "average":
            chosen = "average of " + ", ".join(describe_model(p["model"], p["reg"], self.members) for p in s["parts"])
        else:
            chosen = describe_model(s["model"], s["reg"], self.members)
        cal = self.calibration.get("kind", "")
        cal = (
            f", calibration {cal}"
            if cal
            else (f", temperature {self.calibration['temperature']:.3g}" if "temperature" in self.calibration else "")
        )
        sample = f" on {s['rows']:,} of {s['rows_total']:,} rows" if s.get("rows", 0) < s.get("rows_total", 0) else ""
        return f"chose {s['group']} -> {chosen}{cal}; {s['folds']}-fold CV {metric}{sample} {value}"

    def describe_nested(self) -> str:
        """One line: the nested cross-validation estimate of the whole procedure, or '' when none was asked for."""
        n = self.selection.get("nested")
        if not n:
            return ""
        return (
            f"nested {n['folds']}-fold CV {n['metric']} of the whole procedure (selection, refit, calibration): "
            f"{format_estimate(n['metric'], n['mean'], n['std'])} ({self.seconds_nested:.0f} s)"
        )


def legacy_spec(config: dict) -> FeatureSpec:
    """The block spec equivalent to a single-block store config (end point, pooling, square crop size)."""
    pooling = config.get("pooling")
    if pooling not in ("avg", "max"):
        raise ValueError(
            f"--recipe auto needs globally pooled features (avg or max); this store has pooling "
            f"{pooling!r}: extract a store without --pooling flatten"
        )
    return FeatureSpec.classic(config["end_point"], pooling, config["image_size"])


def spec_of(config: dict) -> FeatureSpec:
    """The :class:`FeatureSpec` a features config (extractor or store) was made with."""
    return FeatureSpec.from_dict(config["features"]) if "features" in config else legacy_spec(config)


def _linear_file_names(kind: str | None, models) -> dict:
    """``{MODEL: (coef name, intercept name)}`` in ``linear.npz`` for the linear ``models`` of a fitted ``kind``:
    ``coef``/``intercept`` for a linear winner, ``coef_MODEL``/``intercept_MODEL`` per family of an average. (In
    memory both are ``fitted["arrays"][MODEL]``; the file keeps the names it has had since the format's first
    version.) Written by ``AutoModel._linear_arrays``, read by ``AutoModel._restore``."""
    if kind == "average":
        return {m: (f"coef_{m}", f"intercept_{m}") for m in models}
    return {m: ("coef", "intercept") for m in models}


class AutoModel(Model):
    """The auto recipe on frozen block features; see the module docstring. Subclasses fix the task."""

    def _owned(self) -> tuple:
        return (self.extractor, self.dense)

    task = "classification"
    kind = "auto"

    def __init__(
        self,
        weights_path=None,
        restore_from=None,
        *,
        classes=(),
        features: FeatureSpec | None = None,
        arch: str | None = None,
        models=None,
        folds: int = AUTO.folds,
        power: float = AUTO.power,
        hidden=None,
        dropout: float | None = None,
        learning_rate: float | None = None,
        l2s=None,
        members: int = AUTO.members,
        select_rows: int = AUTO.select_rows,
        epochs: int | None = None,
        patience: int | None = None,
        precision: str = "auto",
        threads: int | None = None,
        batch_size: int | None = None,
    ):
        head = defaults.for_recipe("head", self.task)
        hidden = head.hidden if hidden is None else ((hidden,) if isinstance(hidden, int) else tuple(hidden))
        l2s = AUTO.dense_l2s if l2s is None else ((l2s,) if isinstance(l2s, (int, float)) else tuple(l2s))
        dropout = head.dropout if dropout is None else dropout
        learning_rate = head.learning_rate if learning_rate is None else learning_rate
        defaults.check_auto_settings(
            hidden=hidden,
            dropout=dropout,
            l2s=l2s,
            learning_rate=learning_rate,
            epochs=epochs,
            patience=patience,
            folds=folds,
            power=power,
            members=members,
            select_rows=select_rows,
            threads=threads,
            batch_size=batch_size,
        )
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.classes = tuple(str(c) for c in classes)
        self._infer_classes = not self.classes  # then every train() takes them from its labels
        if self.classes and (len(self.classes) < 2 or len(set(self.classes)) != len(self.classes)):
            raise ValueError(f"classes must be at least 2 distinct names, got {self.classes}")
        self.features_spec = features or defaults.default_features(self.task)
        if arch is not None:
            get_cfg(arch)  # a ValueError naming the known architectures
            self.features_spec.check(arch)
        elif not set(self.features_spec.end_points) <= {n for a in ARCHITECTURES for n in end_point_names(a)}:
            self.features_spec.check("vgg19")  # the arch comes from the weights file: refuse what no VGG has
        self.arch = arch
        self.models = tuple(models or MODELS[self.task])
        unknown = [m for m in self.models if m not in MODELS[self.task]]
        if unknown:
            raise ValueError(f"models for {self.task} are {MODELS[self.task]}, got {unknown}")
        self.folds, self.power = int(folds), float(power)
        self.hidden, self.dropout, self.learning_rate = (
            tuple(int(h) for h in hidden),
            float(dropout),
            float(learning_rate),
        )
        self.members, self.select_rows, self.l2s = int(members), int(select_rows), tuple(float(v) for v in l2s)
        self.epochs = int(epochs or head.epochs)
        self.patience = int(patience or head.patience)
        self.precision, self.threads, self.batch_size = precision, threads, batch_size
        if weights_path is not None:  # checked now, loaded at the first extraction
            if not isinstance(weights_path, (str, os.PathLike)):
                raise TypeError(f"weights_path must be a path (str or os.PathLike), got {type(weights_path).__name__}")
            weights_path = resolve_weights(weights_path)  # an explicit path: must be a file; never downloads
        self.weights_path = weights_path
        self.extractor: BlockExtractor | None = None
        self.feature_config: dict = {}  # set by the fit or the restore
        self.fitted: dict = {}
        self.dense: DenseHead | None = None
        self.last_errors: list = []
        self.restored_from: str | None = None
        #: The fingerprints of the items the model was fitted on (``train``/``train_dataset``), else None.
        self.training_fingerprints: np.ndarray | None = None
        if restore_from is not None:
            self._restore(restore_from)

    # --- features ----------------------------------------------------------------------------------------------
    def attach(self) -> BlockExtractor:
        """Build (once) the frozen block extractor; a restored model checks the conv weights' fingerprint."""
        if self.extractor is None:
            spec = spec_of(self.feature_config) if self.feature_config else self.features_spec
            arch = (self.feature_config or {}).get("arch", self.arch)
            path = resolve_weights(self.weights_path, arch=arch or "vgg16")
            fx = BlockExtractor(
                path, spec, arch=arch, batch_size=self.batch_size, precision=self.precision, threads=self.threads
            )
            if self.feature_config and fx.config["weights_sha256"] != self.feature_config["weights_sha256"]:
                fx.close()
                raise ModelError(
                    f"the model was trained on other VGG weights (conv fingerprint "
                    f"{self.feature_config['weights_sha256'][:12]}...) than {path} "
                    f"({fx.config['weights_sha256'][:12]}...); pass the weights file it was trained with"
                )
            self.weights_path, self.extractor = path, fx
        return self.extractor

    def features_of(self, dataset: Dataset, progress: bool | None = None, cache=None, log=None):
        """Block features of a data set's items: ``(features, ok_indices, errors)``. With ``cache`` (a file path of
        the caller's) they go through a resumable store there (:func:`vggtransfer.data.store.extract_resumable`)."""
        fx = self.attach()
        if cache is not None:
            return extract_resumable(cache, dataset, fx, progress, log=log)[:3]
        if dataset.arrays is not None:
            return fx.extract_images(dataset.arrays, progress=progress)
        return fx.extract_paths(dataset.paths, progress=progress)

    def _check_class_weights(self, class_weights) -> None:
        """Refuse class weights that no candidate model could use, before any feature is paid for."""
        if class_weights is None or self.task != "classification":
            return
        if not set(self.models) - {"ridge"}:
            raise ValueError(
                f"class_weights: the least-squares classifier (ridge) takes no class weights and models="
                f"{tuple(self.models)} has no other; add 'logreg' or 'dense'"
            )

    # --- training ----------------------------------------------------------------------------------------------
    def train(
        self, image_paths, targets, *, seed: int = 0, progress: bool | None = None, class_weights=None, log=None, **head
    ) -> AutoReport:
        """Extract every image's blocks once, select by cross-validation, refit, calibrate. Bad images are skipped
        and reported in ``AutoReport.skipped``; ``targets`` are numbers (regressor) or class names/indices."""
        image_paths, targets = training_items(image_paths, targets)
        self._check_class_weights(class_weights)
        self._forget_inferred_classes()
        targets = self._encode(targets)  # checked (and classes named) before any image is read
        t0 = time.perf_counter()
        fx = self.attach()
        feats, ok, errors = fx.extract_paths(image_paths, progress=progress)
        if not ok:
            raise ValueError("no usable image among the training paths: " + "; ".join(str(e) for e in errors[:5]))
        t1 = time.perf_counter()
        report = self.fit_features(
            feats, targets[ok], fx.config, seed=seed, progress=progress, class_weights=class_weights, log=log, **head
        )
        self.training_fingerprints = fingerprints([image_paths[i] for i in ok])
        report.skipped, report.seconds_features = errors, t1 - t0
        report.train_index = np.asarray(ok)
        return report

    def train_dataset(
        self,
        dataset: Dataset,
        *,
        seed: int = 0,
        progress: bool | None = None,
        class_weights=None,
        log=None,
        cache_dir=None,
        **head,
    ) -> AutoReport:
        """Train on a :class:`Dataset` (paths or arrays). ``cache_dir``: the features go through a resumable store
        there (``train.h5``), so that a killed run continues its extraction when rerun; deleting it is the caller's."""
        self._check_classes(dataset.classes)
        self._check_class_weights(class_weights)
        dataset.check_every_class(min_items=defaults.CV_MIN_PER_CLASS)  # before features are paid for
        t0 = time.perf_counter()
        cache = None if cache_dir is None else Path(cache_dir) / "train.h5"
        feats, ok, errors = self.features_of(dataset, progress, cache, log)
        t1 = time.perf_counter()
        used = dataset.subset(ok)
        prints = used.fingerprints()
        for line in used.copy_notes(prints) if log else ():
            log(line)
        report = self.fit_features(
            feats,
            dataset.labels[ok],
            self.attach().config,
            seed=seed,
            progress=progress,
            class_weights=class_weights,
            log=log,
            **head,
        )
        report.skipped, report.seconds_features, report.train_index = errors, t1 - t0, np.asarray(ok)
        self.training_fingerprints = prints
        return report

    def train_store(
        self,
        store: StoredFeatures,
        *,
        seed: int = 0,
        progress: bool | None = None,
        class_weights=None,
        log=None,
        **head,
    ) -> AutoReport:
        """Train on a feature store (block store from ``vggtransfer extract``, or a single pooled block)."""
        self._check_classes(store.label_names)
        report = self.fit_features(
            store.features,
            store.labels,
            store.config,
            seed=seed,
            progress=progress,
            class_weights=class_weights,
            log=log,
            **head,
        )
        report.train_index = np.arange(len(store))
        return report

    def train_on_features(self, features, targets, **kwargs) -> AutoReport:
        """Train on rows computed by this model's extractor (:meth:`features_of`, ``extractor.extract_paths``)."""
        self._forget_inferred_classes()
        return self.fit_features(features, targets, self.attach().config, **kwargs)

    def fit_features(
        self,
        features,
        targets,
        config: dict,
        *,
        seed: int = 0,
        progress: bool | None = None,
        class_weights=None,
        log=None,
        epochs: int | None = None,
        patience: int | None = None,
        batch_size: int = 32,
        nested: int = 0,
    ) -> AutoReport:
        """Select, refit and calibrate on raw block features made with ``config`` (an extractor's or a store's).

        ``nested`` (>= 2): first estimate this whole procedure by nested cross-validation with that many outer
        folds on the CV rows (:func:`vggtransfer.models.nested.nested_estimate`; about ``nested`` times the cost of
        selection and refit), saved as ``selection['nested']``.

        ``epochs``/``patience``/``batch_size`` are the Dense head's training settings (default: the instance's)."""
        epochs, patience = epochs or self.epochs, patience or self.patience
        self._check_class_weights(class_weights)
        self.training_fingerprints = None  # rows without their items; train() and train_dataset() set them after
        if epochs < 1 or patience < 1:
            raise ValueError(f"epochs and patience must be >= 1, got epochs={epochs}, patience={patience}")
        spec = spec_of(config)
        blocks, views = spec.blocks(config["arch"]), spec.views(config["arch"])
        if not isinstance(features, StoreRows):  # a store read on demand stays in its file
            features = np.asarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != spec.dim(config["arch"]):
            raise ValueError(f"features must have shape (n, {spec.dim(config['arch'])}), got {features.shape}")
        y = self._encode(targets)
        if len(y) != len(features):
            raise ValueError(f"{len(features)} feature rows but {len(y)} targets")
        cw = None
        if self.task == "classification":
            missing = sorted(set(range(len(self.classes))) - set(y.tolist()))
            if missing:
                raise ValueError(f"class(es) {[self.classes[i] for i in missing]} have no training item")
            counts = np.bincount(y, minlength=len(self.classes))
            few = [self.classes[i] for i in np.flatnonzero(counts < defaults.CV_MIN_PER_CLASS)]
            if few:
                raise ValueError(
                    f"class(es) {few} have fewer than {defaults.CV_MIN_PER_CLASS} training items; cross-validation "
                    f"needs {defaults.CV_MIN_PER_CLASS} or more of every class"
                )
            smallest = int(np.argmin(counts))
            if counts[smallest] < self.folds and log:  # make_folds can split a class into no more folds than items
                log(
                    f"note: class {self.classes[smallest]!r} has {counts[smallest]} training items: "
                    f"{counts[smallest]}-fold cross-validation instead of {self.folds}"
                )
            big = int(np.argmax(counts))
            if class_weights is None and counts[big] >= defaults.IMBALANCE_NOTE * counts[smallest] and log:
                log(
                    f"note: the classes are imbalanced ({self.classes[big]!r} {counts[big]}, {self.classes[smallest]!r} "
                    f"{counts[smallest]}): the model learns these proportions and the CV accuracy counts each class by "
                    f"its photos; where photos to come are not in these proportions, weight the classes equally "
                    f"(--class-weights balanced, class_weights='balanced')"
                )
            weights = resolve_class_weights(class_weights, y, len(self.classes))
            cw = None if weights is None else {i: float(w) for i, w in enumerate(weights)}
        n_classes = len(self.classes)
        dense_heads: dict = {}

        def dense_cv(x_tr, y_tr, x_te, y_te, l2, fold_seed, groups=None):
            key = (x_tr.shape[1], l2)
            if key not in dense_heads:
                dense_heads[key] = DenseHead(x_tr.shape[1], self._head_spec(l2), self.learning_rate, self.threads)
            head = dense_heads[key]
            # Early stopping on a part of the fold's training rows, never on its held-out rows: the epoch is a
            # parameter like the others, and choosing it on the rows that score it would flatter the Dense head's
            # CV score (and the outputs calibration and averaging learn from). An image's rows (its mirror image,
            # its copies: ``groups``) stay on one side, or the stopping rows would repeat rows the head fits.
            strata = y_tr if self.task == "classification" else quantile_bins(y_tr, 5)
            fit_rows, stop_rows = split_indices(len(y_tr), defaults.VAL_FRACTION, fold_seed, strata, groups)
            h = head.fit(
                x_tr[fit_rows],
                y_tr[fit_rows],
                x_tr[stop_rows],
                y_tr[stop_rows],
                epochs=epochs,
                patience=patience,
                seed=fold_seed,
                batch_size=batch_size,
                class_weights=None if cw is None else [cw[i] for i in range(n_classes)],
            )
            return head.predict(x_te), h.best_epoch

        # Large sets: cross-validation on a stratified sample (its time and memory grow with the rows), the refit on
        # every row.
        rows = selection_rows(y, self.task, self.select_rows, self.folds, seed)
        if len(rows) < len(y) and log:
            log(f"cross-validation on a stratified {len(rows):,} of the {len(y):,} rows; the refit on all of them")
        nested_result, t_nested = None, time.perf_counter()
        if nested:
            fit = dict(epochs=epochs, patience=patience, batch_size=batch_size, class_weights=class_weights)
            nested_result = self._nested(features, y, config, rows, int(nested), seed, log, fit)
        t_nested = time.perf_counter() - t_nested
        t0 = time.perf_counter()
        # Normalised in chunks of rows: the CV rows' blocks, then the winner's blocks of every row (memory: those,
        # not every block of every row in float64). With the mirror image kept (``FeatureSpec.mirror``) each image
        # gives a row per view, and an image's rows are one group for the folds: never on both sides of one.
        n_views = len(views)
        z = view_rows(features[rows], views, self.power)
        _check_finite(z, np.tile(rows, n_views))
        copies = copy_groups(z[: len(rows)])
        if copies is not None and log:
            n = copies_count(copies)
            what = "1 training image is a copy of another" if n == 1 else f"{n:,} training images are copies of others"
            log(f"{what} (the same features); cross-validation keeps each copy in its original's fold")
        if n_views > 1:
            copies = np.tile(np.arange(len(rows)) if copies is None else copies, n_views)
        y_cv = np.tile(y[rows], n_views)
        try:
            sel = select(
                z,
                y_cv,
                blocks,
                self.task,
                models=self.models,
                k=self.folds,
                seed=seed,
                n_classes=n_classes,
                class_weight=cw,
                dense=dense_cv,
                dense_l2s=self.l2s,
                log=log,
                copies=copies,
            )
        finally:
            for h in dense_heads.values():
                h.close()
        t1 = time.perf_counter()
        best = sel.best
        names = candidate_groups(blocks)[best.group]
        del z
        x = view_rows(features, views, self.power, only=names)
        _check_finite(x, np.tile(np.arange(len(features)), n_views))
        y = np.tile(y, n_views)
        fitted = {"model": best.model, "reg": best.reg, "blocks": names}
        history = None
        if self.dense is not None:
            self.dense.close()
            self.dense = None
        fit_args = dict(seed=seed, progress=progress, batch_size=batch_size, cw=cw)
        if best.model == "average":  # classes: each family's best, refitted; arrays per linear family
            fitted["parts"] = [{k: p[k] for k in ("model", "reg", "temperature")} for p in sel.parts]
            for part, chosen in zip(fitted["parts"], sel.parts):
                if part["model"] == "dense":
                    history, part["epochs"] = self._refit_dense(x, y, part["reg"], chosen["epochs"], **fit_args)
                    part["members"] = self.members
                else:
                    fitted.setdefault("arrays", {})[part["model"]] = self._refit_linear(
                        x, y, part["model"], part["reg"], cw, seed
                    )
        elif best.model == "dense":
            history, fitted["epochs"] = self._refit_dense(x, y, best.reg, sel.best_epochs, **fit_args)
            fitted["members"] = self.members
        else:
            fitted["arrays"] = {best.model: self._refit_linear(x, y, best.model, best.reg, cw, seed)}
        if self.task == "regression":
            calibration = fit_regression_calibration(sel.oof, y_cv, seed=seed)
        else:
            calibration = {"temperature": fit_temperature(sel.oof, y_cv)}
        self.fitted, self.calibration = fitted, calibration
        self.selection = {**sel.summary(), "rows": int(len(rows)), "rows_total": int(len(features))}
        if nested_result is not None:
            self.selection["nested"] = nested_result
        self.feature_config = dict(config)
        self.features_spec = spec
        report = AutoReport(
            self.selection,
            calibration,
            history=history,
            seconds_select=t1 - t0,
            seconds_refit=time.perf_counter() - t1,
            members=self.members if self.dense is not None else 1,
            seconds_nested=t_nested,
        )
        if log:
            log(report.describe())
        return report

    def _refit_dense(self, x, y, l2, fold_epochs, *, seed, progress, batch_size, cw) -> tuple:
        """The Dense head (an ensemble of ``members``) on every row for the folds' median early-stopping epoch;
        ``(history, epochs)``."""
        n_classes = len(self.classes)
        self.dense = DenseHead(x.shape[1], self._head_spec(l2, self.members), self.learning_rate, self.threads)
        final = max(1, int(round(statistics.median(fold_epochs))))
        history = self.dense.fit(
            x,
            y,
            epochs=final,
            patience=final,
            seed=seed,
            progress=progress,
            batch_size=batch_size,
            class_weights=None if cw is None else [cw[i] for i in range(n_classes)],
        )
        return history, final

    def _refit_linear(self, x, y, model: str, reg: float, cw, seed) -> dict:
        """``{'coef', 'intercept'}`` of ridge (targets; for classes the least-squares classifier on one-hot codes,
        (K, d) weights) or logistic regression (classes, (K, d) for every class) on every row."""
        n_classes = len(self.classes)
        if model == "ridge":
            return fit_ridge(x, y if self.task == "regression" else np.eye(n_classes)[y], reg)
        coef, intercept = logreg_arrays(fit_logreg(x, y, reg, cw, seed), n_classes)
        return {"coef": coef, "intercept": intercept}

    def _nested(self, features, y, config, rows, k, seed, log, fit) -> dict:
        """Nested cross-validation of :meth:`fit_features` (selection, refit, calibration) on the CV ``rows``;
        ``y`` encoded. Leaves the last outer fold's fit behind: the caller fits on every row next."""
        sub, ys = np.asarray(features[rows], np.float32), y[rows]
        names = np.asarray(self.classes) if self.task == "classification" else None

        def fit_rows(tr) -> str:
            targets = ys[tr] if names is None else names[ys[tr]]
            return self.fit_features(sub[tr], targets, config, seed=seed, progress=False, **fit).describe()

        def predict_rows(te):
            out = self.predict_features(sub[te])
            return out if self.task == "regression" else np.log(np.maximum(out, 1e-30))

        if log:
            log(f"nested cross-validation: {k} outer folds, each selecting, refitting and calibrating on the rest")
        copies = copy_groups(sub)  # the same pixels give the same raw rows: no normalised copy of every row needed
        weights = None
        if self.task == "classification" and fit.get("class_weights") is not None:
            per_class = resolve_class_weights(fit["class_weights"], ys, len(self.classes))
            weights = np.asarray(per_class)[ys]
        return nested_estimate(
            fit_rows, predict_rows, ys, self.task, k, seed, log, self.classes or None, copies, weights
        )

    def _head_spec(self, l2: float, members: int = 1) -> HeadSpec:
        return HeadSpec(
            task=self.task,
            hidden=self.hidden,
            dropout=self.dropout,
            l2=float(l2),
            classes=self.classes,
            members=members,
        )

    def _encode(self, targets) -> np.ndarray:
        """Targets as indices (classes) or floats; a classifier given no classes takes them from the labels."""
        if self.task == "classification" and not self.classes:
            self.classes = infer_classes(targets)
            targets = np.asarray(targets).astype(str)
        return encode_targets(targets, self.task, self.classes)

    def _forget_inferred_classes(self) -> None:
        """Classes taken from one training call's labels are not kept for the next (given ones are)."""
        if self._infer_classes:
            self.classes = ()

    def _check_classes(self, classes) -> None:
        if self.task == "classification":
            self.classes = tuple(classes) if self._infer_classes else self.classes
            if len(self.classes) < 2:
                raise ValueError("a classifier needs at least 2 classes")
        check_data_classes(self.task, classes, self.classes)

    # --- prediction --------------------------------------------------------------------------------------------
    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ModelError("the model is not trained: call train() first, or restore one with restore_from=DIR")

    def predict_features(self, features) -> np.ndarray:
        """Calibrated predictions from raw block features (rows made with this model's feature config)."""
        self._require_fitted()
        spec = spec_of(self.feature_config)
        if not isinstance(features, StoreRows):
            features = np.asarray(features, np.float32)
        if not len(features):
            return np.zeros((0,) if self.task == "regression" else (0, len(self.classes)))
        # One prediction per view a row holds (the photo; its mirror image where the spec keeps it), averaged.
        views = spec.views(self.feature_config["arch"])
        return np.mean(
            [self._calibrated(normalise_blocks(features, b, self.power, only=self.fitted["blocks"])) for b in views], 0
        )

    def _calibrated(self, x) -> np.ndarray:
        """Calibrated outputs of the fitted model on the normalised blocks ``x`` of one view."""
        if self.fitted["model"] == "average":  # each family's probabilities at its own temperature, averaged
            raw = np.mean(
                [apply_temperature(self._raw(x, p["model"]), p["temperature"]) for p in self.fitted["parts"]], 0
            )
        else:
            raw = self._raw(x, self.fitted["model"])
        if self.task == "regression":
            return apply_regression_calibration(self.calibration, raw)
        return apply_temperature(raw, self.calibration["temperature"])

    def _raw(self, x, model: str) -> np.ndarray:
        """One fitted model's uncalibrated outputs on normalised blocks ``x``: the Dense head's, ridge's values
        (targets), or the softmax of a linear classifier's scores (logistic regression, least squares)."""
        if model == "dense":
            assert self.dense is not None  # fitted or restored with the model
            return self.dense.predict(x)
        arrays = self.fitted["arrays"][model]
        coef, intercept = np.asarray(arrays["coef"]), np.asarray(arrays["intercept"])
        if self.task == "regression":  # ridge, the one linear model for targets
            return x.astype(np.float64) @ coef + intercept
        return np.exp(scores_to_log_probs(x.astype(np.float64) @ coef.T + intercept))

    def _output_shape(self, n: int) -> tuple:
        return (n,) if self.task == "regression" else (n, len(self.classes))

    def predict(self, image_paths, errors: str = "report", progress: bool = False) -> np.ndarray:
        """Predictions for image file(s) in order: values (n,) or probabilities (n, K); NaN for unreadable images
        (listed in :attr:`last_errors`; a single bad path raises its :class:`ImageError`)."""
        self._require_fitted()
        out, self.last_errors = predict_paths(
            image_paths, self.attach().iter_paths, self._output_shape, self.predict_features, errors
        )
        return out

    def predict_arrays(self, arrays) -> np.ndarray:
        """Predictions for in-memory uint8 RGB images (any size), by the same preprocessing as files."""
        self._require_fitted()
        feats, ok, errors = self.attach().extract_images(arrays)
        out = np.full(self._output_shape(len(ok) + len(errors)), np.nan)
        out[ok] = self.predict_features(feats)
        return out

    def features_config(self) -> dict:
        """The block features' configuration this model was fitted on."""
        return self.feature_config

    # --- persistence -------------------------------------------------------------------------------------------
    def config(self) -> dict:
        """What ``vggtransfer.json`` holds."""
        cfg = {
            "kind": self.kind,
            "task": self.task,
            "format_version": AUTO_FORMAT,
            "library_version": __version__,
            "arch": self.feature_config["arch"],
            "weights_sha256": self.feature_config["weights_sha256"],
            "weights_file": Path(str(self.weights_path or "")).name,
            "classes": list(self.classes),
            "feature_config": self.feature_config,
            "power": self.power,
            "model": {k: v for k, v in self.fitted.items() if k != "arrays"},
            "calibration": self.calibration,
            "selection": self.selection,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if self.dense is not None:
            cfg["head"] = self.dense.spec.to_dict()
        return cfg

    def save(self, path, protect=(), extra: dict | None = None) -> Path:
        """Write the model folder atomically (only a previous model is ever replaced; see
        :func:`vggtransfer.models.modeldir.write_model_dir`). ``extra`` adds fields to ``vggtransfer.json``."""
        self._require_fitted()
        cfg = {**self.config(), **(extra or {})}

        def write(tmp: Path) -> None:
            if self.dense is not None:
                self.dense.save(tmp)
            arrays = self._linear_arrays()
            if arrays:
                np.savez(tmp / LINEAR_FILE, **arrays)
            if self.training_fingerprints is not None:
                np.save(tmp / FINGERPRINTS_FILE, self.training_fingerprints)
            (tmp / MODEL_FILE).write_text(json.dumps(cfg, indent=2))

        return write_model_dir(path, write, protect)

    def _linear_arrays(self) -> dict:
        """What ``linear.npz`` holds (names: :func:`_linear_file_names`); {} for a Dense head alone."""
        arrays = self.fitted.get("arrays", {})
        return {
            name: np.asarray(arrays[model][key])
            for model, names in _linear_file_names(self.fitted["model"], arrays).items()
            for key, name in zip(("coef", "intercept"), names)
        }

    def _restore(self, restore_from) -> None:
        cfg, folder = load_model_json(restore_from)
        where = folder / MODEL_FILE
        if cfg.get("kind") != self.kind:
            raise ModelError(f"{folder}: a {cfg.get('kind')!r} model, not an auto model (use vggtransfer.load_model)")
        if cfg.get("task") != self.task:
            raise ModelError(
                f"{folder}: a {cfg.get('task')} model cannot be restored as {type(self).__name__} ({self.task})"
            )
        for key in ("format_version", "feature_config", "model", "calibration", "power"):
            if key not in cfg:
                raise ModelError(f"{where}: field {key!r} is missing")
        if not isinstance(cfg["format_version"], int) or cfg["format_version"] > AUTO_FORMAT:
            raise ModelError(
                f"{where}: format version {cfg['format_version']!r} is newer than this library reads "
                f"({AUTO_FORMAT}); upgrade vggtransfer"
            )
        self.feature_config, self.power = cfg["feature_config"], float(cfg["power"])
        self.features_spec = spec_of(self.feature_config)
        saved = tuple(cfg.get("classes", ()))
        if self.classes and self.classes != saved:
            raise ModelError(f"{folder}: the model's classes are {saved}, not the classes= given {self.classes}")
        self.classes = saved
        self._infer_classes = False  # a restored classifier keeps its classes
        self.calibration, self.selection = cfg["calibration"], cfg.get("selection", {})
        self.fitted = dict(cfg["model"])
        kind = self.fitted.get("model")
        parts = [p.get("model") for p in self.fitted.get("parts", [])] if kind == "average" else [kind]
        if "dense" in parts:
            missing = checkpoint_files_missing(folder, CHECKPOINT)
            if missing or "head" not in cfg:
                raise ModelError(f"{folder}: head checkpoint file(s) missing: {', '.join(missing) or 'head spec'}")
            spec = HeadSpec.from_dict(cfg["head"])
            dim = len(columns(self.features_spec.blocks(self.feature_config["arch"]), self.fitted["blocks"]))
            self.dense = DenseHead(dim, spec, threads=self.threads)
            self.dense.restore(folder)
        linear = [m for m in parts if m != "dense"]
        if linear:
            npz = folder / LINEAR_FILE
            if not npz.is_file():
                raise ModelError(f"{folder}: {LINEAR_FILE} is missing (an incomplete copy of the model folder?)")
            try:
                with np.load(npz, allow_pickle=False) as data:
                    names = _linear_file_names(kind, linear)
                    self.fitted["arrays"] = {m: {"coef": data[c], "intercept": data[i]} for m, (c, i) in names.items()}
            except (OSError, ValueError, KeyError) as exc:
                raise ModelError(f"{npz}: cannot be read ({exc})") from None
            if self.task == "regression":  # ridge's one output
                for arrays in self.fitted["arrays"].values():
                    arrays["intercept"] = float(arrays["intercept"])
        self.training_fingerprints = _read_fingerprints(folder / FINGERPRINTS_FILE)
        self.restored_from = str(folder)
        self.attach()  # checks the conv weights' fingerprint now, not at the first prediction


def _read_fingerprints(path: Path) -> np.ndarray | None:
    """A saved model's training fingerprints (None where it has none: models saved before they were kept)."""
    if not path.is_file():
        return None
    try:
        fp = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot be read ({exc})") from None
    if fp.ndim != 1 or fp.dtype.kind != "S":
        raise ModelError(f"{path}: expected a 1-D array of fingerprints, got {fp.dtype} {fp.shape}")
    return fp


class AutoRegressor(AutoModel):
    """The auto recipe for numeric targets: ridge or the Dense head, calibrated (identity, linear or isotonic)."""

    task = "regression"


class AutoClassifier(ClassifierAPI, AutoModel):
    """The auto recipe for classes: logistic regression, the least-squares (ridge) classifier or the softmax head,
    temperature-calibrated probabilities.
    ``predict`` gives probabilities (n, K); ``predict_top_k`` class names with probabilities."""

    task = "classification"


def view_rows(features, views, power: float, only=None) -> np.ndarray:
    """The normalised blocks (:func:`normalise_blocks`) of each view a feature row holds (``FeatureSpec.views``: the
    photo's; the mirror image's after it where the spec keeps it), stacked: ``(len(views) * n, width)``, the photo
    rows first. Training on both is feature-level augmentation; :meth:`AutoModel.predict_features` averages."""
    parts = [normalise_blocks(features, b, power, only=only) for b in views]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _check_finite(z: np.ndarray, rows) -> None:
    """Training rows must be finite: a NaN or inf feature (a damaged store, features from elsewhere) is named here
    rather than failing deep in a solver ("array must not contain infs or NaNs")."""
    bad = np.flatnonzero(~np.isfinite(z).all(axis=1))
    if len(bad):
        raise ValueError(
            f"{len(bad)} training feature row(s) hold NaN or inf (the first: row {int(rows[bad[0]])}); features must "
            "be finite"
        )


def log_to_stderr(line: str) -> None:
    """Print a selection progress line on stderr."""
    print(line, file=sys.stderr)


__all__ = ["AutoModel", "AutoClassifier", "AutoRegressor", "AutoReport", "DenseHead", "spec_of", "ImageError"]
