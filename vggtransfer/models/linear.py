"""Stored features + a scikit-learn linear model: LogisticRegression with a grid search over C and standardisation.

``LinearModel.fit`` runs ``GridSearchCV`` (stratified folds) on a :class:`~vggtransfer.data.store.StoredFeatures`;
``report`` gives scikit-learn's classification report and the confusion matrix (also as a PNG); ``save`` writes the
fitted pipeline with joblib beside a ``vggtransfer.json`` holding the feature configuration it needs, so
``LinearModel.load(dir).predict(paths)`` rebuilds the same frozen extractor in a fresh process.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from vggtransfer import __version__
from vggtransfer.data.store import FeatureStoreMismatch, StoredFeatures, compare_config
from vggtransfer.features.extractor import FeatureExtractor, predict_paths
from vggtransfer.models.base import Model
from vggtransfer.models.classifier_api import ClassifierAPI, confusion_matrix
from vggtransfer.models.modeldir import MODEL_FILE, ModelError, load_model_json, write_model_dir
from vggtransfer.weights.sources import resolve_weights

JOBLIB_FILE = "linear.joblib"
DEFAULT_CS = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 1.0)


def make_search(cs=DEFAULT_CS, cv: int = 5, seed: int = 0, n_jobs: int = 1):
    """GridSearchCV over C and standardisation of a LogisticRegression pipeline, stratified folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=2000))])
    grid = {"scale": [StandardScaler(), "passthrough"], "clf__C": list(cs)}
    return GridSearchCV(
        pipe,
        grid,
        cv=StratifiedKFold(cv, shuffle=True, random_state=seed),
        n_jobs=n_jobs,
        scoring="accuracy",
        refit=True,
    )


class LinearModel(ClassifierAPI, Model):
    """A fitted scikit-learn pipeline + the feature configuration (weights fingerprint, end point, pooling, size)."""

    kind = "linear"

    def _owned(self) -> tuple:
        return (self.extractor,)

    def __init__(self, pipeline, classes, feature_config: dict, weights_file: str = "", cv_results: dict | None = None):
        self.pipeline, self.classes = pipeline, tuple(classes)
        self.config = dict(feature_config)
        self.weights_file = weights_file
        self.cv_results = cv_results or {}
        self.extractor: FeatureExtractor | None = None
        self.last_errors: list = []
        self._weights_path = None

    @classmethod
    def fit(
        cls, store: StoredFeatures, cs=DEFAULT_CS, cv: int = 5, seed: int = 0, weights_file: str = "", class_weight=None
    ) -> "LinearModel":
        """Grid search C x (standardise or not) with stratified ``cv``-fold cross-validation, refit on all rows."""
        if store.task != "classification":
            raise ValueError("the linear recipe is a classifier; the store has regression targets")
        counts = np.bincount(store.labels, minlength=len(store.label_names))
        cv = max(2, min(cv, int(counts[counts > 0].min())))
        search = make_search(cs, cv, seed)
        if class_weight:
            search.estimator.set_params(clf__class_weight=class_weight)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings on unscaled features at large C
            search.fit(store.features, store.labels)
        results = {
            "best_params": {
                "C": search.best_params_["clf__C"],
                "standardize": not isinstance(search.best_params_["scale"], str),
            },
            "best_cv_accuracy": float(search.best_score_),
            "cv_folds": cv,
            "seconds": time.perf_counter() - t0,
        }
        return cls(search.best_estimator_, store.label_names, store.config, weights_file, results)

    # --- evaluation ---------------------------------------------------------------------------------------------
    def predict_features(self, features) -> np.ndarray:
        """Class probabilities (n, K) for stored feature rows."""
        return self.pipeline.predict_proba(np.asarray(features, np.float32))

    def report(self, store: StoredFeatures, png: str | os.PathLike | None = None, title: str = "") -> dict:
        """Accuracy, classification_report text and confusion matrix on a store (made with the same config)."""
        from sklearn.metrics import classification_report

        diff = compare_config(store.config, self.config)
        if diff:
            raise FeatureStoreMismatch("evaluation store", diff)
        pred = self.predict_features(store.features).argmax(1)
        cm = confusion_matrix(store.labels, pred, len(self.classes))
        text = classification_report(
            store.labels,
            pred,
            labels=list(range(len(self.classes))),
            target_names=list(self.classes),
            digits=4,
            zero_division=0,
        )
        if png is not None:
            save_confusion_png(cm, self.classes, png, title)
        return {"accuracy": float(np.mean(pred == store.labels)), "report": text, "confusion": cm, "n": len(pred)}

    # --- prediction on images ------------------------------------------------------------------------------------
    def attach(
        self, weights_path=None, batch_size: int | None = None, threads=None, precision: str = "auto"
    ) -> FeatureExtractor:
        """Build the frozen extractor this model's features came from (checks the weights fingerprint)."""
        if self.extractor is not None:
            return self.extractor
        path = resolve_weights(weights_path, arch=self.config["arch"])
        fx = FeatureExtractor(
            path,
            arch=self.config["arch"],
            end_point=self.config["end_point"],
            pooling=self.config["pooling"],
            image_size=self.config["image_size"],
            batch_size=batch_size,
            threads=threads,
            precision=precision,
        )
        if fx.config["weights_sha256"] != self.config["weights_sha256"]:
            fx.close()
            raise ModelError(
                f"the linear model was fitted on features of other VGG weights than {path}; "
                "pass the weights file it was trained with"
            )
        self.extractor = fx
        return fx

    def predict(self, image_paths, errors: str = "report", progress: bool = False) -> np.ndarray:
        """Class probabilities (n, K) for image files, NaN rows for unreadable images (see ``last_errors``)."""
        fx = self.attach(self._weights_path)
        out, self.last_errors = predict_paths(
            image_paths, fx.iter_paths, lambda n: (n, len(self.classes)), self.predict_features, errors
        )
        return out

    def predict_arrays(self, arrays) -> np.ndarray:
        """Probabilities (n, K) for uint8 (n, h, w, 3) images, resized to the model's input size."""
        from vggtransfer.data.datasets import resize_arrays

        fx = self.attach(self._weights_path)
        return self.predict_features(fx.extract_arrays(resize_arrays(arrays, self.config["image_size"])))

    # --- persistence ---------------------------------------------------------------------------------------------
    def save(self, path, protect=(), extra: dict | None = None) -> Path:
        """The fitted pipeline (joblib) + ``vggtransfer.json``, atomically through the one model-directory writer
        (only a previous model is ever replaced; see :func:`vggtransfer.models.modeldir.write_model_dir`)."""
        import joblib

        cfg = {
            "kind": self.kind,
            "format_version": 1,
            "library_version": __version__,
            **{k: v for k, v in self.config.items() if k != "library_version"},
            "feature_library_version": self.config.get("library_version"),
            "classes": list(self.classes),
            "weights_file": self.weights_file,
            "cv": self.cv_results,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(extra or {}),
        }

        def write(tmp: Path) -> None:
            joblib.dump(self.pipeline, tmp / JOBLIB_FILE)
            (tmp / MODEL_FILE).write_text(json.dumps(cfg, indent=2))

        return write_model_dir(path, write, protect)

    @classmethod
    def load(cls, model_dir, weights_path=None, attach: bool = False, **runtime) -> "LinearModel":
        """A saved linear model; ``attach`` (or any ``runtime`` setting: ``precision``, ``threads``, ``batch_size``)
        builds its feature extractor at once, else on the first prediction."""
        import joblib

        cfg, path = load_model_json(model_dir)
        if cfg.get("kind") != cls.kind:
            raise ModelError(f"{path}: not a linear model (kind {cfg.get('kind')!r})")
        if not (path / JOBLIB_FILE).is_file():
            raise ModelError(f"{path}: {JOBLIB_FILE} is missing")
        keys = ("arch", "weights_sha256", "end_point", "pooling", "image_size", "preprocessing")
        missing = [k for k in keys if k not in cfg]
        if missing:
            raise ModelError(f"{path / MODEL_FILE}: field(s) {', '.join(missing)} missing")
        feature_config = {k: cfg[k] for k in keys}
        feature_config["library_version"] = cfg.get("feature_library_version") or cfg["library_version"]
        model = cls(
            joblib.load(path / JOBLIB_FILE), cfg["classes"], feature_config, cfg.get("weights_file", ""), cfg.get("cv")
        )
        model._weights_path = weights_path
        if attach or runtime:
            model.attach(weights_path, **runtime)
        return model


#: Above this many classes a confusion matrix is drawn without a count in each cell (they would not be legible) and
#: printed as its most frequent confusions instead of a table (102 classes: 1,854 columns of text).
CONFUSION_CELLS_UP_TO = 30


def save_confusion_png(cm: np.ndarray, classes, png, title: str = "") -> Path:
    """Write a confusion matrix (rows: true class, columns: predicted) as a PNG: counts in the cells up to
    :data:`CONFUSION_CELLS_UP_TO` classes; beyond, the colours alone on a figure at most 25 inches (2,520 px) wide,
    with smaller class labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(classes)
    cells = k <= CONFUSION_CELLS_UP_TO
    side = 0.7 * k if cells else min(24.0, 0.22 * k)
    fig, ax = plt.subplots(figsize=(1.2 + side, 1.0 + side), dpi=100)
    ax.imshow(cm, cmap="Blues")
    font = None if cells else max(4.0, min(8.0, 0.22 * 72 * side / k))  # a label's height: one row's, in points
    ax.set_xticks(range(k), classes, rotation=45 if cells else 90, ha="right" if cells else "center", fontsize=font)
    ax.set_yticks(range(k), classes, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = cm.max() if cm.size else 0
    for i in range(k if cells else 0):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > top / 2 else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return png


def format_confusion(cm: np.ndarray, classes, most: int = 15) -> str:
    """The confusion matrix as aligned text, rows true classes and columns predicted ones; above
    :data:`CONFUSION_CELLS_UP_TO` classes, its ``most`` largest off-diagonal cells instead (``true -> predicted``)."""
    if len(classes) > CONFUSION_CELLS_UP_TO:
        off = np.array(cm, copy=True)
        np.fill_diagonal(off, 0)
        order = np.argsort(-off, axis=None, kind="stable")[:most]
        pairs = [(int(i), int(j)) for i, j in zip(*np.unravel_index(order, off.shape)) if off[i, j] > 0]
        head = f"confusion matrix of {len(classes)} classes (all of it: --json or --png)"
        if not pairs:
            return head + "; no item was confused"
        w = max(len(classes[i]) for i, _ in pairs)
        lines = [head + f"; the {len(pairs)} most frequent confusions, true -> predicted: items"]
        lines += [f"  {classes[i].ljust(w)} -> {classes[j]}: {off[i, j]}" for i, j in pairs]
        return "\n".join(lines)
    w = max(6, max(len(c) for c in classes) + 1)
    lines = ["true\\pred".ljust(w) + "".join(c.rjust(w) for c in classes)]
    for c, row in zip(classes, cm):
        lines.append(c.ljust(w) + "".join(str(v).rjust(w) for v in row))
    return "\n".join(lines)
