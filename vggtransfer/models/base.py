"""The small base every model kind shares: ``save(dir)`` / ``load(dir)`` through the one model-directory reader and
writer (:mod:`vggtransfer.models.modeldir`), ``predict(paths)``, and ``close()`` / ``with``.

The kinds and the class each saved ``kind`` is restored as are listed once, in :mod:`vggtransfer.models.registry`.
"""

from __future__ import annotations

from pathlib import Path

from vggtransfer.core.runtime import Closing
from vggtransfer.data.store import FeatureStoreMismatch, compare_config


class Model(Closing):
    """A trained model: frozen VGG features (or a fine-tuned stack) and what was fitted on them.

    Subclasses set :attr:`kind` (the ``kind`` written to ``vggtransfer.json``) and implement :meth:`save` and
    ``predict``; :meth:`load` restores one saved by :meth:`save`.
    """

    #: The ``kind`` recorded in the model directory's ``vggtransfer.json``.
    kind: str = ""

    @classmethod
    def load(cls, model_dir, weights_path=None, **runtime) -> "Model":
        """Restore a model saved by :meth:`save` in ``model_dir``; ``weights_path`` is the VGG weight file it was
        trained with (default: the library's lookup), ``runtime`` the speed settings (``precision``, ``threads``,
        ``batch_size``)."""
        return cls(weights_path, restore_from=model_dir, **runtime)  # type: ignore[call-arg]  # each kind's constructor restores

    def features_config(self) -> dict:
        """The configuration of the features this model reads (weights fingerprint, blocks or end point, sizes):
        what a feature store must have been built with to be scored by :meth:`predict_store`."""
        return self.config  # type: ignore[attr-defined]

    def check_store(self, store, name: str = "feature store") -> None:
        """Refuse (:class:`~vggtransfer.data.store.FeatureStoreMismatch`) a store whose features were made
        differently from this model's."""
        diff = compare_config(store.config, self.features_config())
        if diff:
            raise FeatureStoreMismatch(name, diff)

    def predict_store(self, store, name: str = "feature store"):
        """Predictions (values, or probabilities (n, K)) for the rows of a feature store (see :meth:`check_store`)."""
        self.check_store(store, name)
        return self.predict_features(store.features)  # type: ignore[attr-defined]

    def save(self, path, protect=(), extra: dict | None = None) -> Path:
        """Write the model directory atomically at ``path`` (only a previous model there is ever replaced; nothing
        inside or around the ``protect`` paths); ``extra`` adds fields to its ``vggtransfer.json``."""
        raise NotImplementedError


__all__ = ["Model"]
