"""The ``Vgg16`` model: frozen VGG conv layers + a trainable head (fc6 256 ReLU + output), TF1 graph style.

Training computes each image's frozen features once and trains the head on them (not a VGG forward pass per step).
``save`` writes a Saver checkpoint of the head only, plus ``vggtransfer.json`` with everything needed to rebuild it
(head spec, target normalisation, input size, end point, pooling, weights fingerprint). ``Vgg16(restore_from=DIR)``
rebuilds and restores it in a fresh process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from vggtransfer import __version__
from vggtransfer.core.tf import tf
from vggtransfer.data.datasets import Dataset, resize_arrays
from vggtransfer.data.images import ImageError
from vggtransfer.data.splits import (
    check_data_classes,
    encode_targets,
    resolve_class_weights,
    split_indices,
    training_items,
)
from vggtransfer.data.store import FeatureStoreMismatch, StoredFeatures, compare_config, extract_resumable
from vggtransfer.features.extractor import FeatureExtractor, layers_needed, predict_paths
from vggtransfer.models import defaults
from vggtransfer.models.base import Model
from vggtransfer.models.heads import HeadGraph, HeadSpec, History, TrainReport  # noqa: F401 (re-exported)
from vggtransfer.models.modeldir import (  # noqa: F401 (re-exported)  # noqa: F401
    CHECKPOINT,
    FORMAT_VERSION,
    MODEL_FILE,
    ModelError,
    checkpoint_files_missing,
    load_model_json,
    read_model_config,
    restore_checkpoint,
    write_model_dir,
)
from vggtransfer.weights.npy import load_weights
from vggtransfer.weights.sources import resolve_weights

REG = defaults.REGRESSOR
tf1 = tf.compat.v1


class TransferModel(Model):
    """A frozen VGG conv stack + a trainable head (:class:`HeadSpec`), in one TF1 graph and session.

    Subclasses fix the architecture and the task; :class:`Vgg16` is the regressor of the design card.

    Defaults (global average pooling of pool5, fc6 256 ReLU, dropout 0.5, L2 1.0, Adam 1e-3, early stopping) are
    the best of a sweep on the tiger/cat length task (bench/tune_regressor.py; figures in README.md): flattened
    pool5 (25,088 inputs) overfits a few hundred images, global pooling with strong L2 does not.
    """

    def _owned(self) -> tuple:
        return (self.extractor,)

    arch = "vgg16"
    task = "regression"

    def __init__(
        self,
        weights_path=None,
        restore_from=None,
        *,
        image_size: int = defaults.IMAGE_SIZE,
        hidden=REG.hidden,
        dropout: float = REG.dropout,
        l2: float = REG.l2,
        end_point: str = REG.end_point,
        pooling: str = REG.pooling,
        learning_rate: float = REG.learning_rate,
        batch_size: int | None = None,
        precision: str = "auto",
        threads: int | None = None,
        classes=(),
        spec: HeadSpec | None = None,
    ):
        self.restored_from = None
        defaults.check_number("learning_rate", learning_rate, 0)
        if isinstance(hidden, int):
            hidden = (hidden,)
        if restore_from is not None:
            cfg = read_model_config(restore_from)
            if cfg["arch"] != self.arch:
                raise ModelError(f"{restore_from}: model was built on {cfg['arch']}, not {self.arch}")
            image_size, end_point, pooling = cfg["image_size"], cfg["end_point"], cfg["pooling"]
            spec = HeadSpec.from_dict(cfg["head"])
            if spec.task != self.task:
                raise ModelError(
                    f"{restore_from}: a {spec.task} model cannot be restored as {type(self).__name__} ({self.task})"
                )
            self.restored_from = cfg["_dir"]
        elif spec is None:
            spec = HeadSpec(task=self.task, hidden=tuple(hidden), dropout=dropout, l2=l2, classes=tuple(classes))
        self.spec = spec
        self.learning_rate = learning_rate
        self.weights_path = resolve_weights(weights_path, arch=self.arch)
        weights = load_weights(self.weights_path, layers=layers_needed(self.arch, end_point), arch=self.arch)
        self.extractor = FeatureExtractor(
            weights,
            arch=self.arch,
            end_point=end_point,
            pooling=pooling,
            image_size=image_size,
            batch_size=batch_size,
            precision=precision,
            threads=threads,
            extend=self._build_head,
        )
        del weights
        assert self.extractor.extension is not None  # built by _build_head
        self.head: HeadGraph = self.extractor.extension
        self.session = self.extractor.session
        self.config: dict = dict(self.extractor.config)
        self.last_errors: list = []
        if self.restored_from is not None:
            if cfg["weights_sha256"] != self.config["weights_sha256"]:
                raise ModelError(
                    f"{restore_from}: the model was trained on other VGG weights (conv fingerprint "
                    f"{cfg['weights_sha256'][:12]}...) than {self.weights_path} ({self.config['weights_sha256'][:12]}"
                    "...); pass the weights file it was trained with"
                )
            with self.extractor.graph.as_default():
                restore_checkpoint(self.head.saver, self.session, self.restored_from)

    def _build_head(self, features):
        with tf1.name_scope("head_input"):
            head_in = tf1.placeholder_with_default(features, features.shape, name="features")
        return HeadGraph(head_in, self.spec, learning_rate=self.learning_rate)

    # --- features ------------------------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        """The square input side in pixels."""
        return self.extractor.image_size

    def extract(self, image_paths, progress: bool | None = None):
        """Frozen features of image files: ``(features, ok_indices, errors)``; bad files are skipped."""
        return self.extractor.extract_paths(image_paths, progress=progress)

    # --- training ------------------------------------------------------------------------------------------------
    def train(
        self,
        image_paths,
        targets,
        *,
        val_fraction: float = defaults.VAL_FRACTION,
        epochs: int = REG.epochs,
        batch_size: int = 32,
        patience: int = REG.patience,
        seed: int = 0,
        progress: bool | None = None,
        stratify=None,
        class_weights=None,
    ) -> TrainReport:
        """Extract each image's features once, then train the head on them with a held-out validation split.

        Unreadable images are skipped and reported in ``TrainReport.skipped``. ``stratify`` (labels) makes the
        split stratified. Returns the report; the model keeps the head with the best validation loss.
        """
        image_paths, targets = training_items(image_paths, targets)
        targets = self._encode_targets(targets)  # checked before any image is read
        t0 = time.perf_counter()
        features, ok, errors = self.extract(image_paths, progress=progress)
        t1 = time.perf_counter()
        if not ok:
            raise ValueError("no usable image among the training paths: " + "; ".join(str(e) for e in errors[:5]))
        strat = None if stratify is None else np.asarray(stratify)[ok]
        report = self.train_on_features(
            features,
            targets[ok],
            val_fraction=val_fraction,
            epochs=epochs,
            batch_size=batch_size,
            patience=patience,
            seed=seed,
            progress=progress,
            stratify=strat,
            class_weights=class_weights,
        )
        ok = np.asarray(ok)
        report.train_index, report.val_index = ok[report.train_index], ok[report.val_index]
        report.skipped = errors
        report.seconds_features = t1 - t0
        return report

    def train_on_features(
        self,
        features,
        targets,
        *,
        val_fraction: float = defaults.VAL_FRACTION,
        epochs: int = REG.epochs,
        batch_size: int = 32,
        patience: int = REG.patience,
        seed: int = 0,
        progress: bool | None = None,
        stratify=None,
        class_weights=None,
    ) -> TrainReport:
        """Train the head on precomputed features (rows of :meth:`extract`). Indices in the report are rows.

        Regression targets are normalised to zero mean and unit variance over the training split (the mean and
        scale are saved with the model). Classification targets are class indices into ``spec.classes``; the split
        is then stratified by class, and ``class_weights='balanced'`` (or an array) weights the loss.
        """
        features = self._check_features(features, targets)
        y = self._encode_targets(targets)
        if stratify is None and self.spec.task == "classification":
            stratify = y
        train_idx, val_idx = split_indices(len(features), val_fraction, seed, stratify)
        return self._fit(
            features,
            y,
            train_idx,
            val_idx,
            epochs=epochs,
            batch_size=batch_size,
            patience=patience,
            seed=seed,
            progress=progress,
            class_weights=class_weights,
        )

    def train_fixed_split(
        self,
        features,
        targets,
        n_train: int,
        *,
        epochs: int = REG.epochs,
        batch_size: int = 32,
        patience: int = REG.patience,
        seed: int = 0,
        progress: bool | None = None,
        class_weights=None,
    ) -> TrainReport:
        """Train the head on precomputed features whose first ``n_train`` rows are the training set and the rest the
        validation set (a separate validation data set, e.g. ``--val-data``)."""
        features = self._check_features(features, targets)
        y = self._encode_targets(targets)
        return self._fit(
            features,
            y,
            np.arange(n_train),
            np.arange(n_train, len(features)),
            epochs=epochs,
            batch_size=batch_size,
            patience=patience,
            seed=seed,
            progress=progress,
            class_weights=class_weights,
        )

    def _check_features(self, features, targets) -> np.ndarray:
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != self.extractor.dim:
            raise ValueError(f"features must have shape (n, {self.extractor.dim}), got {features.shape}")
        if len(features) != len(targets):
            raise ValueError(f"{len(features)} feature rows but {len(targets)} targets")
        return features

    def _fit(
        self, features, y, train_idx, val_idx, *, epochs, batch_size, patience, seed, progress, class_weights
    ) -> TrainReport:
        if epochs < 1 or patience < 1:
            raise ValueError(f"epochs and patience must be >= 1, got epochs={epochs}, patience={patience}")
        if not len(train_idx):
            raise ValueError("no training examples")
        if self.spec.task == "regression":
            self.spec.fit_target_scaling(y[train_idx])
            y = self.spec.normalise(y)
        weights = self._class_weights(class_weights, y[train_idx])
        self.head.reset(self.session, seed)
        t0 = time.perf_counter()
        has_val = len(val_idx) > 0
        history = self.head.fit(
            self.session,
            features[train_idx],
            y[train_idx],
            features[val_idx] if has_val else None,
            y[val_idx] if has_val else None,
            epochs=epochs,
            batch_size=batch_size,
            patience=patience,
            seed=seed,
            class_weights=weights,
            progress=progress,
        )
        return TrainReport(history, train_idx, val_idx, seconds_head=time.perf_counter() - t0)

    # --- training on data sets and stores -----------------------------------------------------------------------
    def features_of(self, dataset: Dataset, progress: bool | None = None, cache=None, log=None):
        """Frozen features of a data set's items: ``(features, ok_indices, errors)``. With ``cache`` (a file path of
        the caller's) they go through a resumable store there (:func:`vggtransfer.data.store.extract_resumable`)."""
        if cache is not None:
            return extract_resumable(cache, dataset, self.extractor, progress, log=log)[:3]
        if dataset.arrays is not None:
            feats = self.extractor.extract_arrays(resize_arrays(dataset.arrays, self.image_size))
            return feats, list(range(len(dataset))), []
        return self.extract(dataset.paths, progress=progress)

    def train_dataset(
        self,
        dataset: Dataset,
        *,
        val_fraction: float = defaults.VAL_FRACTION,
        val: Dataset | None = None,
        class_weights=None,
        cache_dir=None,
        log=None,
        **fit,
    ) -> TrainReport:
        """Train on a :class:`Dataset` (paths or arrays). With ``val`` that set is the validation split; else a
        seeded stratified ``val_fraction`` of ``dataset``. ``class_weights='balanced'`` for imbalanced folders.
        ``cache_dir``: the features go through resumable stores there (``train.h5``, ``val.h5``), so that a killed
        run continues its extraction when rerun; deleting it is the caller's. ``log`` hears about a resumed cache."""
        self._check_classes(dataset.classes)
        dataset.check_every_class()
        t0 = time.perf_counter()
        cache = None if cache_dir is None else Path(cache_dir)
        feats, ok, errors = self.features_of(dataset, fit.get("progress"), cache and cache / "train.h5", log)
        labels = dataset.labels[ok]
        if val is not None:
            self._check_classes(val.classes)
            vf, vok, verr = self.features_of(val, fit.get("progress"), cache and cache / "val.h5", log)
            errors = errors + verr
            n_train = len(feats)
            feats = np.concatenate([feats, vf])
            labels = np.concatenate([labels, val.labels[vok]])
            report = self.train_fixed_split(feats, labels, n_train, class_weights=class_weights, **fit)
        else:
            report = self.train_on_features(
                feats, labels, val_fraction=val_fraction, class_weights=class_weights, **fit
            )
        report.skipped = errors
        report.seconds_features = time.perf_counter() - t0 - report.seconds_head
        return report

    def train_store(
        self,
        store: StoredFeatures,
        *,
        val_store: StoredFeatures | None = None,
        val_fraction: float = defaults.VAL_FRACTION,
        class_weights=None,
        **fit,
    ) -> TrainReport:
        """Train on a feature store (see :func:`vggtransfer.data.store.open_store`), refusing one made differently."""
        for s in (store, val_store):
            if s is None:
                continue
            diff = compare_config(s.config, self.config)
            if diff:
                raise FeatureStoreMismatch("feature store", diff)
            self._check_classes(s.label_names)
        if val_store is not None:
            feats = np.concatenate([store.features, val_store.features])
            labels = np.concatenate([store.labels, val_store.labels])
            return self.train_fixed_split(feats, labels, len(store), class_weights=class_weights, **fit)
        return self.train_on_features(
            store.features, store.labels, val_fraction=val_fraction, class_weights=class_weights, **fit
        )

    def _check_classes(self, classes):
        check_data_classes(self.spec.task, classes, self.spec.classes)

    def _encode_targets(self, targets) -> np.ndarray:
        """Regression: finite floats. Classification: class names or indices -> int64 indices into spec.classes."""
        return encode_targets(targets, self.spec.task, self.spec.classes)

    def _class_weights(self, class_weights, y_train):
        if self.spec.task != "classification":
            return None
        return resolve_class_weights(class_weights, y_train, len(self.spec.classes))

    # --- persistence ---------------------------------------------------------------------------------------------
    def save(self, path, protect=(), extra: dict | None = None) -> Path:
        """Write the head checkpoint + config to directory ``path`` atomically (``extra``: more fields for
        ``vggtransfer.json``).

        The new model is written to a temp directory and swapped in with renames; an interrupted save leaves the
        previous model readable (as ``path`` or ``path.previous``).
        """

        def write(tmp: Path) -> None:
            with self.extractor.graph.as_default():
                self.head.saver.save(self.session, str(tmp / CHECKPOINT), write_meta_graph=False, write_state=False)
            cfg = {
                **({"kind": self.kind} if self.kind else {}),
                "format_version": FORMAT_VERSION,
                "library_version": __version__,
                **{k: v for k, v in self.config.items() if k != "library_version"},
                "feature_dim": self.extractor.dim,
                "weights_file": Path(self.weights_path).name,
                "head": self.spec.to_dict(),
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **(extra or {}),
            }
            (tmp / MODEL_FILE).write_text(json.dumps(cfg, indent=2))

        return write_model_dir(path, write, protect)

    # --- prediction ----------------------------------------------------------------------------------------------
    def predict(self, image_paths, errors: str = "report", progress: bool = False) -> np.ndarray:
        """Predict from image file(s): float array of shape (n,), in the order of the paths.

        A single path (str/Path) that cannot be read raises :class:`ImageError`. For a list, ``errors='report'``
        predicts the others, puts NaN for each bad image, warns naming them, and keeps them in
        :attr:`last_errors`; ``errors='raise'`` raises on the first bad image.
        """
        out, self.last_errors = predict_paths(
            image_paths,
            self.extractor.iter_paths,
            self._output_shape,
            lambda feats: self.spec.decode(self.session.run(self.head.predictions, {self.head.features: feats})),
            errors,
        )
        return out

    def predict_features(self, features) -> np.ndarray:
        """The head's outputs for rows of this model's features (:meth:`extract`, or a matching feature store)."""
        return self.head.predict_features(self.session, features)

    def predict_arrays(self, arrays) -> np.ndarray:
        """Predictions for in-memory uint8 RGB images (n, h, w, 3) (e.g. SIGNS h5 arrays), prepared like files:
        values (n,) for a regressor, probabilities (n, K) for a classifier."""
        feats = self.extractor.extract_arrays(resize_arrays(arrays, self.image_size))
        return self.head.predict_features(self.session, feats)

    def _output_shape(self, n: int) -> tuple:
        return (n, len(self.spec.classes)) if self.spec.task == "classification" else (n,)


__all__ = ["TransferModel", "ModelError", "TrainReport", "ImageError", "split_indices", "read_model_config"]
