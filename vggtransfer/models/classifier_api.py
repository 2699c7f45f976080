"""What every classifier kind shares, from its ``predict`` alone: top-k class names and evaluation on a data set
(TensorFlow-free)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from vggtransfer.data.datasets import Dataset
from vggtransfer.data.images import ImageError, path_list
from vggtransfer.data.splits import class_index_map


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
    last_errors: list

    if TYPE_CHECKING:  # provided by each kind; declared for the type checker only (a stub here would shadow them)

        def predict(self, image_paths, errors: str = "report", progress: bool = False) -> np.ndarray: ...

        def predict_arrays(self, arrays) -> np.ndarray: ...

    def predict_top_k(self, image_paths, k: int = 1) -> list:
        """Per image: a list of (class, probability), best first (``k`` >= 1; more than the classes gives them all);
        or the :class:`ImageError` for a bad image."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a whole number >= 1, got {k!r}")
        paths, single = path_list(image_paths)
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
        to_model = class_index_map(dataset.classes, self.classes, dataset.source or "data set")
        if dataset.arrays is not None:
            probs = self.predict_arrays(dataset.arrays)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                probs = self.predict(dataset.paths, errors="report")
        good = ~np.isnan(probs).any(axis=1)
        pred = probs[good].argmax(1)
        y = to_model[dataset.labels[good].astype(int)]
        return {
            "accuracy": float(np.mean(pred == y)) if len(y) else float("nan"),
            "n": int(len(y)),
            "failed": int((~good).sum()),
            "confusion": confusion_matrix(y, pred, len(self.classes)),
            "y_true": y,
            "y_pred": pred,
            "probabilities": probs,
        }


__all__ = ["ClassifierAPI", "top_k", "confusion_matrix"]
