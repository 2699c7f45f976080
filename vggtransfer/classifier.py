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
import warnings

import numpy as np

from . import defaults
from .datasets import Dataset, resize_arrays
from .images import ImageError
from .model import TransferModel, read_model_config
from .modeldir import ModelError, read_kind

CLF = defaults.CLASSIFIER


def top_k(probs: np.ndarray, classes, k: int) -> list:
    """Rows of probabilities -> per row [(class, prob), ...] best first (k at most K)."""
    k = max(1, min(int(k), len(classes)))
    out = []
    for row in np.atleast_2d(probs):
        order = np.argsort(-row, kind="stable")[:k]
        out.append([(classes[i], float(row[i])) for i in order])
    return out


def confusion_matrix(y_true, y_pred, k: int) -> np.ndarray:
    """A k x k matrix of counts: rows are true classes, columns predicted ones."""
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
                 hidden=CLF.hidden, dropout: float = CLF.dropout, l2: float = CLF.l2, pooling: str = CLF.pooling,
                 end_point: str = CLF.end_point, image_size: int = defaults.IMAGE_SIZE,
                 learning_rate: float = CLF.learning_rate, **kwargs):
        if restore_from is not None:
            arch = read_model_config(restore_from)["arch"]
        self.arch = arch
        super().__init__(weights_path, restore_from, classes=tuple(classes), hidden=hidden, dropout=dropout, l2=l2,
                         pooling=pooling, end_point=end_point, image_size=image_size, learning_rate=learning_rate,
                         **kwargs)

    @property
    def classes(self) -> tuple:
        """The class names, in the order of the probability columns."""
        return self.spec.classes

    # --- prediction --------------------------------------------------------------------------------------------
    def predict_arrays(self, arrays) -> np.ndarray:
        """Probabilities (n, K) for uint8 (n, h, w, 3) images (e.g. SIGNS h5 arrays), resized to the input size."""
        feats = self.extractor.extract_arrays(resize_arrays(np.asarray(arrays), self.image_size))
        return self.head.predict_features(self.session, feats)

    def save(self, path, extra: dict | None = None, protect=()):
        """Save like :meth:`TransferModel.save`, recording ``kind: classifier``."""
        return super().save(path, {"kind": self.kind, **(extra or {})}, protect)


class VggRegressor(TransferModel):
    """The regressor of any architecture (``Vgg16`` is the VGG16 one); restored by :func:`load_model`."""

    task = "regression"

    def __init__(self, weights_path=None, restore_from=None, *, arch: str = "vgg16", **kwargs):
        if restore_from is not None:
            arch = read_model_config(restore_from)["arch"]
        self.arch = arch
        super().__init__(weights_path, restore_from, **kwargs)


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
