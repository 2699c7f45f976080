"""The softmax classifier on frozen VGG features: ``VggClassifier``, the same machinery as the regressor.

It is a :class:`~vggtransfer.models.transfer.TransferModel` with ``task='classification'``: one head abstraction
(:class:`~vggtransfer.models.heads.HeadSpec`), trained on cached features (from images, arrays or a feature store), with
a stratified seeded split, early stopping on validation loss keeping the best weights, and class weights.

>>> clf = VggClassifier("vgg16.npy", classes=["ants", "bees"], pooling="max", hidden=(128,))
>>> clf.train_dataset(datasets.from_folder("hymenoptera_data/train"))
>>> clf.save("models/ants")
>>> VggClassifier.load("models/ants").predict_top_k(["x.jpg"], k=2)
[[('ants', 0.93), ('bees', 0.07)]]
"""

from __future__ import annotations

from vggtransfer.models import defaults
from vggtransfer.models.classifier_api import ClassifierAPI, confusion_matrix, top_k  # noqa: F401 (re-exported)
from vggtransfer.models.modeldir import read_model_config
from vggtransfer.models.transfer import TransferModel

CLF = defaults.CLASSIFIER


class VggClassifier(ClassifierAPI, TransferModel):
    """Frozen VGG16/VGG19 features (any end point; pooling flatten | max | avg) + a softmax head.

    Defaults are the SIGNS recipe: pool5, global max pooling, Dense(128, relu), Dense(K) softmax.
    ``predict(paths)`` returns probabilities (n, K) with NaN rows for unreadable images; ``predict_top_k`` returns
    class names with probabilities.
    """

    task = "classification"
    kind = "classifier"

    def __init__(
        self,
        weights_path=None,
        restore_from=None,
        *,
        classes=(),
        arch: str = "vgg16",
        hidden=CLF.hidden,
        dropout: float = CLF.dropout,
        l2: float = CLF.l2,
        pooling: str = CLF.pooling,
        end_point: str = CLF.end_point,
        image_size: int = defaults.IMAGE_SIZE,
        learning_rate: float = CLF.learning_rate,
        **kwargs,
    ):
        if restore_from is not None:
            arch = read_model_config(restore_from)["arch"]
        self.arch = arch
        super().__init__(
            weights_path,
            restore_from,
            classes=tuple(classes),
            hidden=hidden,
            dropout=dropout,
            l2=l2,
            pooling=pooling,
            end_point=end_point,
            image_size=image_size,
            learning_rate=learning_rate,
            **kwargs,
        )

    @property
    def classes(self) -> tuple:  # type: ignore[override]  # read-only: the head spec's classes
        """The class names, in the order of the probability columns."""
        return self.spec.classes


class VggRegressor(TransferModel):
    """The regressor of any architecture on one pooled block, with a Dense head; restored by
    :func:`vggtransfer.models.registry.load_model`."""

    task = "regression"
    kind = "regressor"

    def __init__(self, weights_path=None, restore_from=None, *, arch: str = "vgg16", **kwargs):
        if restore_from is not None:
            arch = read_model_config(restore_from)["arch"]
        self.arch = arch
        super().__init__(weights_path, restore_from, **kwargs)


__all__ = ["VggClassifier", "VggRegressor", "ClassifierAPI", "top_k", "confusion_matrix"]
