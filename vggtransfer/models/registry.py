"""The model registry: which class restores each saved ``kind``, declared once; :func:`load_model` restores any
model directory through it (every kind has the same ``Model.load(dir)`` / ``save(dir)``).

=============  ==========================================================  =================================
saved kind     class                                                       made by
=============  ==========================================================  =================================
``auto``       :class:`AutoRegressor` / :class:`AutoClassifier` / ``Vgg16``  ``train`` (the default recipe)
``regressor``  :class:`VggRegressor`                                       ``train --recipe head`` (numbers)
``classifier`` :class:`VggClassifier`                                      ``train --recipe head`` (classes)
``linear``     :class:`LinearModel`                                        ``train --recipe linear``
``finetuned``  :class:`FineTunedClassifier`                                ``train --recipe finetune``
=============  ==========================================================  =================================
"""

from __future__ import annotations

from vggtransfer.models.auto import AutoClassifier, AutoRegressor
from vggtransfer.models.base import Model
from vggtransfer.models.classifier import VggClassifier, VggRegressor
from vggtransfer.models.finetune import FineTunedClassifier
from vggtransfer.models.linear import LinearModel
from vggtransfer.models.modeldir import ModelError, read_kind
from vggtransfer.models.vgg16 import Vgg16

#: saved kind -> the class restoring it (``auto`` models are told apart by their task, see :func:`model_class`).
KINDS: dict[str, type[Model]] = {
    "auto": AutoRegressor,
    "regressor": VggRegressor,
    "classifier": VggClassifier,
    "linear": LinearModel,
    "finetuned": FineTunedClassifier,
}


def model_class(cfg: dict) -> type[Model]:
    """The class that restores a model with this ``vggtransfer.json`` (as read by
    :func:`~vggtransfer.models.modeldir.read_kind`)."""
    kind = cfg["kind"]
    if kind not in KINDS:
        raise ModelError(
            f"{cfg.get('_dir', 'model')}: unknown model kind {kind!r}; this library restores "
            f"{', '.join(sorted(KINDS))} (a model from a newer vggtransfer?)"
        )
    if kind == "auto":
        if cfg.get("task") != "regression":
            return AutoClassifier
        return Vgg16 if cfg.get("card") and cfg.get("arch", "vgg16") == "vgg16" else AutoRegressor
    return KINDS[kind]


def load_model(model_dir, weights_path=None, **runtime) -> Model:
    """Restore any saved model by the ``kind`` in its ``vggtransfer.json`` (see :data:`KINDS`). All have
    ``predict(paths)``; classifiers also ``predict_top_k``. ``runtime``: ``precision``, ``threads``, ``batch_size``."""
    return model_class(read_kind(model_dir)).load(model_dir, weights_path, **runtime)


__all__ = ["KINDS", "model_class", "load_model"]
