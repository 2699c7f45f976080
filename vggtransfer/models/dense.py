"""The auto recipe's Dense head on its own: a small graph and session over a features placeholder, trained on the
cross-validation folds and the refit without running the conv stack; saved and restored by a Saver."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vggtransfer.core.runtime import Closing
from vggtransfer.models.heads import HeadSpec, History
from vggtransfer.models.modeldir import CHECKPOINT


class DenseHead(Closing):
    """The Dense head alone, in its own small graph and session, on a features placeholder (cross-validation folds
    and the refit; the conv stack never runs here). Saved and restored by a Saver on its variables only."""

    def __init__(self, dim: int, spec: HeadSpec, learning_rate: float = 1e-3, threads: int | None = None):
        from vggtransfer.core.runtime import new_session
        from vggtransfer.core.tf import tf
        from vggtransfer.models.heads import HeadGraph

        tf1 = tf.compat.v1
        self.spec, self.dim = spec, dim
        self.graph = tf.Graph()
        with self.graph.as_default():
            x = tf1.placeholder(tf.float32, [None, dim], name="features")
            self.head = HeadGraph(x, spec, learning_rate=learning_rate)
            self.session = new_session(self.graph, "fp32", threads)
            self.session.run(tf1.global_variables_initializer())

    def fit(
        self,
        x,
        y,
        x_val=None,
        y_val=None,
        *,
        epochs: int,
        patience: int,
        seed: int,
        batch_size: int = 32,
        class_weights=None,
        progress: bool | None = False,
    ) -> History:
        """Train from scratch (seeded); regression targets are normalised here (mean and scale kept in the spec)."""
        x = np.asarray(x, np.float32)
        if self.spec.task == "regression":
            self.spec.fit_target_scaling(y)
            y = self.spec.normalise(y)
            if y_val is not None:
                y_val = self.spec.normalise(y_val)
        with self.graph.as_default():
            self.head.reset(self.session, seed)
            return self.head.fit(
                self.session,
                x,
                y,
                None if x_val is None else np.asarray(x_val, np.float32),
                y_val,
                epochs=epochs,
                batch_size=batch_size,
                patience=patience,
                seed=seed,
                class_weights=class_weights,
                progress=progress,
            )

    def predict(self, x) -> np.ndarray:
        """Target values (n,) or class probabilities (n, K)."""
        return self.head.predict_features(self.session, np.asarray(x, np.float32))

    def save(self, folder: Path) -> None:
        """The head's variables to ``folder/head.ckpt`` (no meta graph)."""
        with self.graph.as_default():
            self.head.saver.save(
                self.session, str(Path(folder) / CHECKPOINT), write_meta_graph=False, write_state=False
            )

    def restore(self, folder: Path) -> None:
        """Restore from ``folder/head.ckpt``; a damaged checkpoint is a :class:`ModelError` naming it."""
        from vggtransfer.models.modeldir import restore_checkpoint

        with self.graph.as_default():
            restore_checkpoint(self.head.saver, self.session, folder)
