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


from . import defaults
from .classifier_api import ClassifierAPI, confusion_matrix, top_k  # noqa: F401 (re-exported)
from .model import TransferModel, read_model_config
from .modeldir import ModelError, read_kind

CLF = defaults.CLASSIFIER


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
    if kind == "auto":
        from .auto import load_auto

        return load_auto(model_dir, weights_path, **kwargs)
    precision, threads = kwargs.pop("precision", "auto"), kwargs.get("threads")
    if kind == "linear":
        from .linear import LinearModel

        model = LinearModel.load(model_dir, weights_path=weights_path)
        model.attach(weights_path, threads=threads, precision=precision)
        return model
    if kind == "finetuned":
        from .finetune import FineTunedClassifier

        if precision not in ("fp32", "auto"):
            raise ValueError(f"{model_dir}: a fine-tuned model predicts in fp32 only (precision={precision!r} is for "
                             "models on frozen features)")
        return FineTunedClassifier(weights_path, restore_from=model_dir, **kwargs)
    kwargs["precision"] = precision
    if kind == "classifier":
        return VggClassifier(weights_path, restore_from=model_dir, **kwargs)
    if kind == "regressor":
        return VggRegressor(weights_path, restore_from=model_dir, **kwargs)
    raise ModelError(f"{model_dir}: unknown model kind {kind!r}")


__all__ = ["VggClassifier", "VggRegressor", "ClassifierAPI", "load_model", "top_k", "confusion_matrix"]
