"""The softmax classifier on frozen VGG features: ``VggClassifier``, the same machinery as the regressor.

It is a :class:`~vggtransfer.model.TransferModel` with ``task='classification'``: one head abstraction
(:class:`~vggtransfer.heads.HeadSpec`), trained on cached features (from images, arrays or a feature store), with
a stratified seeded split, early stopping on validation loss keeping the best weights, and class weights.

>>> clf = VggClassifier("vgg16.npy", classes=["ants", "bees"], pooling="max", hidden=(128,))
>>> clf.train_dataset(datasets.from_folder("hymenoptera_data/train"))
>>> clf.save("models/ants")
>>> VggClassifier(restore_from="models/ants").predict_top_k(["x.jpg"], k=2)
[[('ants', 0.93), ('bees', 0.07)]]
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

from .datasets import Dataset, resize_arrays
from .images import ImageError
from .model import ModelError, TrainReport, TransferModel, load_model_json, read_model_config
from .store import FeatureStoreMismatch, StoredFeatures, compare_config


def top_k(probs: np.ndarray, classes, k: int) -> list:
    """Rows of probabilities -> per row [(class, prob), ...] best first (k at most K)."""
    k = max(1, min(int(k), len(classes)))
    out = []
    for row in np.atleast_2d(probs):
        order = np.argsort(-row, kind="stable")[:k]
        out.append([(classes[i], float(row[i])) for i in order])
    return out


def confusion_matrix(y_true, y_pred, k: int) -> np.ndarray:
    cm = np.zeros((k, k), np.int64)
    for t, p in zip(y_true, y_pred):
        cm[int(t), int(p)] += 1
    return cm


class ClassifierAPI:
    """Shared by every classifier kind (frozen head, fine-tuned, linear): top-k and evaluation from ``predict``."""

    classes: tuple

    def predict_top_k(self, image_paths, k: int = 1) -> list:
        """Per image: a list of (class, probability), best first; or the :class:`ImageError` for a bad image."""
        single = isinstance(image_paths, (str, os.PathLike))
        paths = [str(image_paths)] if single else [str(p) for p in image_paths]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            probs = self.predict(paths, errors="report")
        errors = {str(e.path): e for e in self.last_errors}
        out = []
        for p, row in zip(paths, probs):
            out.append(errors.get(p) if np.isnan(row).any() and p in errors else top_k(row, self.classes, k)[0])
        if single and isinstance(out[0], ImageError):
            raise out[0]
        return out

    def predict_labels(self, image_paths) -> list:
        """The most probable class name per image (None for a bad image)."""
        return [r[0][0] if isinstance(r, list) else None for r in self.predict_top_k(image_paths, 1)]

    def evaluate_dataset(self, dataset: Dataset) -> dict:
        """Accuracy, confusion matrix and the per-item predictions on a labelled data set."""
        if tuple(dataset.classes) != tuple(self.classes):
            raise ValueError(f"data set classes {dataset.classes} differ from the model's {self.classes}")
        if dataset.arrays is not None:
            probs = self.predict_arrays(dataset.arrays)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                probs = self.predict(dataset.paths, errors="report")
        good = ~np.isnan(probs).any(axis=1)
        pred = probs[good].argmax(1)
        y = dataset.labels[good].astype(int)
        return {"accuracy": float(np.mean(pred == y)) if len(y) else float("nan"), "n": int(len(y)),
                "failed": int((~good).sum()), "confusion": confusion_matrix(y, pred, len(self.classes)),
                "y_true": y, "y_pred": pred, "probabilities": probs}


class VggClassifier(ClassifierAPI, TransferModel):
    """Frozen VGG16/VGG19 features (any end point; pooling flatten | max | avg) + a softmax head.

    Defaults are the SIGNS recipe: pool5, global max pooling, Dense(128, relu), Dense(K) softmax.
    ``predict(paths)`` returns probabilities (n, K) with NaN rows for unreadable images; ``predict_top_k`` returns
    class names with probabilities.
    """

    task = "classification"
    kind = "classifier"

    def __init__(self, weights_path=None, restore_from=None, *, classes=(), arch: str = "vgg16",
                 hidden=(128,), dropout: float = 0.0, l2: float = 1e-3, pooling: str = "max",
                 end_point: str = "pool5", image_size: int = 224, **kwargs):
        if restore_from is not None:
            arch = read_model_config(restore_from)["arch"]
        self.arch = arch
        super().__init__(weights_path, restore_from, classes=tuple(classes), hidden=hidden, dropout=dropout, l2=l2,
                         pooling=pooling, end_point=end_point, image_size=image_size, **kwargs)

    @property
    def classes(self) -> tuple:
        return self.spec.classes

    # --- training ----------------------------------------------------------------------------------------------
    def features_of(self, dataset: Dataset, progress: bool = True):
        """Frozen features of a data set's items: ``(features, ok_indices, errors)``."""
        if dataset.arrays is not None:
            feats = self.extractor.extract_arrays(resize_arrays(dataset.arrays, self.image_size))
            return feats, list(range(len(dataset))), []
        return self.extract(dataset.paths, progress=progress)

    def train_dataset(self, dataset: Dataset, *, val_fraction: float = 0.2, val: Dataset | None = None,
                      class_weights=None, **fit) -> TrainReport:
        """Train on a :class:`Dataset` (paths or arrays). With ``val`` that set is the validation split; else a
        seeded stratified ``val_fraction`` of ``dataset``. ``class_weights='balanced'`` for imbalanced folders."""
        self._check_classes(dataset.classes)
        t0 = time.perf_counter()
        feats, ok, errors = self.features_of(dataset, fit.get("progress", True))
        labels = dataset.labels[ok]
        if val is not None:
            self._check_classes(val.classes)
            vf, vok, verr = self.features_of(val, fit.get("progress", True))
            errors = errors + verr
            n_train = len(feats)
            feats = np.concatenate([feats, vf])
            labels = np.concatenate([labels, val.labels[vok]])
            report = self._train_fixed_split(feats, labels, n_train, class_weights=class_weights, **fit)
        else:
            report = self.train_on_features(feats, labels, val_fraction=val_fraction, class_weights=class_weights,
                                            **fit)
        report.skipped = errors
        report.seconds_features = time.perf_counter() - t0 - report.seconds_head
        return report

    def _train_fixed_split(self, feats, labels, n_train, *, epochs=300, batch_size=32, patience=30, seed=0,
                           progress=True, class_weights=None) -> TrainReport:
        y = self._encode_targets(labels)
        tr, va = np.arange(n_train), np.arange(n_train, len(feats))
        weights = self._class_weights(class_weights, y[tr])
        self._reset_head(seed)
        t0 = time.perf_counter()
        history = self.head.fit(self.session, np.asarray(feats[tr], np.float32), y[tr],
                                np.asarray(feats[va], np.float32) if len(va) else None, y[va] if len(va) else None,
                                epochs=epochs, batch_size=batch_size, patience=patience, seed=seed,
                                class_weights=weights, progress=progress)
        return TrainReport(history, tr, va, seconds_head=time.perf_counter() - t0)

    def train_store(self, store: StoredFeatures, *, val_store: StoredFeatures | None = None,
                    val_fraction: float = 0.2, class_weights=None, **fit) -> TrainReport:
        """Train on a feature store (see :func:`vggtransfer.store.open_store`), refusing one made differently."""
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
            return self._train_fixed_split(feats, labels, len(store), class_weights=class_weights, **fit)
        return self.train_on_features(store.features, store.labels, val_fraction=val_fraction,
                                      class_weights=class_weights, **fit)

    def _check_classes(self, classes):
        if tuple(classes) != tuple(self.classes):
            raise ValueError(f"data classes {tuple(classes)} differ from the model's {self.classes}")

    # --- prediction --------------------------------------------------------------------------------------------
    def predict_arrays(self, arrays) -> np.ndarray:
        """Probabilities (n, K) for uint8 (n, h, w, 3) images (e.g. SIGNS h5 arrays), resized to the input size."""
        feats = self.extractor.extract_arrays(resize_arrays(np.asarray(arrays), self.image_size))
        return self.head.predict_features(self.session, feats)

    def save(self, path, extra: dict | None = None):
        return super().save(path, {"kind": self.kind, **(extra or {})})


class VggRegressor(TransferModel):
    """The regressor of any architecture (``Vgg16`` is the VGG16 one); restored by :func:`load_model`."""

    task = "regression"

    def __init__(self, weights_path=None, restore_from=None, *, arch: str = "vgg16", **kwargs):
        if restore_from is not None:
            arch = read_model_config(restore_from)["arch"]
        self.arch = arch
        super().__init__(weights_path, restore_from, **kwargs)


def read_kind(model_dir) -> dict:
    """The model's ``vggtransfer.json`` with ``kind`` filled in (old regressors have none)."""
    cfg, _ = load_model_json(model_dir)
    if "kind" not in cfg:
        task = (cfg.get("head") or {}).get("task", "regression")
        cfg["kind"] = "classifier" if task == "classification" else "regressor"
    return cfg


def load_model(model_dir, weights_path=None, **kwargs):
    """Restore any saved model by the ``kind`` in its ``vggtransfer.json``: regressor (``Vgg16``), classifier,
    fine-tuned classifier, or linear model. All have ``predict(paths)``; classifiers also ``predict_top_k``."""
    cfg = read_kind(model_dir)
    kind = cfg["kind"]
    precision, threads = kwargs.pop("precision", "fp32"), kwargs.get("threads")
    if kind == "linear":
        from .linear import LinearModel

        model = LinearModel.load(model_dir, weights_path=weights_path)
        model.attach(weights_path, threads=threads, precision=precision)
        return model
    if kind == "finetuned":
        from .finetune import FineTunedClassifier

        if precision != "fp32":
            raise ValueError(f"{model_dir}: a fine-tuned model predicts in fp32 only (precision={precision!r} is for "
                             "models on frozen features)")
        return FineTunedClassifier(weights_path, restore_from=model_dir, **kwargs)
    kwargs["precision"] = precision
    if kind == "classifier":
        return VggClassifier(weights_path, restore_from=model_dir, **kwargs)
    if kind == "regressor":
        if cfg.get("arch", "vgg16") == "vgg16":
            from .model import Vgg16

            return Vgg16(weights_path, restore_from=model_dir, **kwargs)
        return VggRegressor(weights_path, restore_from=model_dir, **kwargs)
    raise ModelError(f"{model_dir}: unknown model kind {kind!r}")


__all__ = ["VggClassifier", "VggRegressor", "ClassifierAPI", "load_model", "top_k", "confusion_matrix"]
