"""The design card's model, ``Vgg16``: frozen VGG16 conv layers + a trainable fc6 (256, ReLU) + a 1-output regressor,
with ``train()``, ``save()`` and ``predict()`` on image paths. It is the auto recipe restricted to that head."""

from __future__ import annotations

from vggtransfer.features.spec import FeatureSpec
from vggtransfer.models import defaults
from vggtransfer.models.auto import AutoRegressor

REG = defaults.REGRESSOR


def _card_features(image_size, end_point, pooling) -> FeatureSpec | None:
    """Explicit feature options of ``Vgg16`` as a single-block spec (the classic square crop), or None for auto's."""
    if image_size is None and end_point is None and pooling is None:
        return None
    pooling = pooling or REG.pooling
    if pooling not in ("avg", "max"):
        raise ValueError(
            f"Vgg16 pools globally ('avg' or 'max'), got pooling={pooling!r}; for a flattened pool5 use VggRegressor"
        )
    return FeatureSpec.classic(end_point or REG.end_point, pooling, image_size or defaults.IMAGE_SIZE)


class Vgg16(AutoRegressor):
    """The design card's model: VGG16 conv layers (frozen) + trainable fc6 (256 units, ReLU) + a 1-output regressor,
    with ``train()``, ``save()`` (the head checkpointed by a Saver) and ``predict()`` on image paths.

    By default it is the auto recipe restricted to this head: it extracts the default feature blocks
    (:data:`vggtransfer.models.defaults.FEATURES`), chooses the input block group and the L2 weight by cross-validation on
    the training data, trains the head on every training image for the median early-stopping epoch of the folds,
    and calibrates its output from the out-of-fold predictions (which undoes the shrinkage toward the mean).
    ``image_size``/``end_point``/``pooling`` fix the input instead (one block of the square centre crop), ``l2``
    fixes the weight.

    >>> model = Vgg16("vgg16.npy")
    >>> report = model.train(paths, lengths)
    >>> model.save("models/length")
    >>> Vgg16(restore_from="models/length").predict(["tiger.jpg"])
    array([103.2])
    """

    arch = "vgg16"
    task = "regression"

    def __init__(
        self,
        vgg16_npy_path=None,
        restore_from=None,
        *,
        image_size: int | None = None,
        end_point: str | None = None,
        pooling: str | None = None,
        hidden=REG.hidden,
        dropout: float = REG.dropout,
        l2=None,
        learning_rate: float = REG.learning_rate,
        features: FeatureSpec | None = None,
        **kwargs,
    ):
        features = features or _card_features(image_size, end_point, pooling)
        super().__init__(
            vgg16_npy_path,
            restore_from,
            features=features,
            arch="vgg16",
            models=("dense",),
            hidden=hidden,
            dropout=dropout,
            learning_rate=learning_rate,
            l2s=l2,
            **kwargs,
        )

    def config(self) -> dict:
        """``vggtransfer.json``, marked as the card's model (restored as ``Vgg16`` by ``load_model``)."""
        return {**super().config(), "card": "Vgg16"}


__all__ = ["Vgg16"]
