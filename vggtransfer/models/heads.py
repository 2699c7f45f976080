"""Trainable heads on a feature tensor: one abstraction for the regressor and the softmax classifier.

A head is described by a :class:`HeadSpec` (plain data, saved as JSON beside the checkpoint) and built into a graph
by :class:`HeadGraph`, which also owns the loss, the optimiser, the Saver (head variables only) and the training
loop on cached features: shuffled minibatches, train and validation loss per epoch, early stopping that keeps the
best weights, and a seed that makes a run reproducible.

Dense layers are ``tf.compat.v1.get_variable`` + ``tf.matmul``: ``tf.compat.v1.layers`` raises under Keras 3.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from vggtransfer.core.progress import bar as progress_bar
from vggtransfer.core.tf import tf
from vggtransfer.features.spec import CHUNK_ROWS

tf1 = tf.compat.v1

TASKS = ("regression", "classification")
HEAD_SCOPE = "head"


@dataclass
class HeadSpec:
    """What a head is: enough to rebuild it and interpret its outputs."""

    task: str = "regression"
    hidden: tuple = (256,)
    outputs: int = 1
    dropout: float = 0.0
    l2: float = 0.0
    classes: tuple = ()
    target_mean: float = 0.0
    target_scale: float = 1.0
    members: int = 1  # independently initialised copies of the layers, outputs averaged (a deep ensemble)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        self.hidden = tuple(int(h) for h in self.hidden)
        if any(h <= 0 for h in self.hidden):
            raise ValueError(f"hidden layer sizes must be positive, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")
        self.members = int(self.members)
        if self.members < 1:
            raise ValueError(f"members must be >= 1, got {self.members}")
        self.classes = tuple(str(c) for c in self.classes)
        if self.task == "classification":
            if len(self.classes) < 2:
                raise ValueError("a classification head needs at least 2 classes")
            self.outputs = len(self.classes)
        elif self.outputs != 1:
            raise ValueError(f"a regression head has 1 output, got {self.outputs}")
        if not self.target_scale > 0:
            raise ValueError(f"target_scale must be > 0, got {self.target_scale}")

    def fit_target_scaling(self, y) -> None:
        """Regression: set ``target_mean``/``target_scale`` from training targets (scale 1 when they are constant)."""
        y = np.asarray(y, np.float64)
        self.target_mean = float(y.mean())
        self.target_scale = float(y.std()) or 1.0

    def normalise(self, y) -> np.ndarray:
        """Regression targets in training units: (y - target_mean) / target_scale, float32 (inverse of decode)."""
        return ((np.asarray(y, np.float64) - self.target_mean) / self.target_scale).astype(np.float32)

    def decode(self, raw: np.ndarray) -> np.ndarray:
        """Regression: normalised outputs -> target units. Classification: probabilities unchanged."""
        if self.task == "regression":
            return np.asarray(raw, np.float64) * self.target_scale + self.target_mean
        return raw

    def to_dict(self) -> dict:
        """The spec as plain JSON-ready data."""
        d = dataclasses.asdict(self)
        d["hidden"], d["classes"] = list(self.hidden), list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "HeadSpec":
        """A spec from :meth:`to_dict` output; unknown fields are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown head spec fields: {', '.join(sorted(unknown))}")
        return cls(**d)


def dense(x: tf.Tensor, units: int, name: str, activation=None, members: int = 1, shared_input: bool = True):
    """A fully connected layer from ``get_variable`` + ``matmul`` (Glorot-uniform weights, zero biases).

    With ``members`` = M > 1 it is M independent layers: weights (M, in, units), biases (M, 1, units), outputs side by
    side, (n, M * units). Their input is either shared (n, in) (the features) or the previous member layers' outputs
    side by side (n, M * in), multiplied by the block-diagonal matrix of the members' weights. Either way it is one
    plain 2-D matmul, so a row's result does not depend on the other rows of its batch (as with one layer)."""
    in_dim = x.shape[-1]
    if in_dim is None:
        raise ValueError(f"dense layer {name} needs a known input width; got shape {x.shape}")
    in_dim = int(in_dim) if (members == 1 or shared_input) else int(in_dim) // members
    lead = [members] if members > 1 else []
    with tf1.variable_scope(name):
        w = tf1.get_variable("weights", lead + [in_dim, units], tf.float32, tf1.glorot_uniform_initializer())
        b = tf1.get_variable("biases", lead + ([1] if lead else []) + [units], tf.float32, tf1.zeros_initializer())
    if members > 1:
        if shared_input:  # (in, M * units): member m's columns are m * units ... (m + 1) * units - 1
            w = tf.reshape(tf.transpose(w, [1, 0, 2]), [in_dim, members * units])
        else:  # block diagonal (M * in, M * units)
            eye = tf.eye(members, dtype=tf.float32)
            w = tf.reshape(w[:, :, None, :] * eye[:, None, :, None], [members * in_dim, members * units])
        b = tf.reshape(b, [members * units])
    y = tf.nn.bias_add(tf.matmul(x, w), b)
    return activation(y) if activation is not None else y


def build_head(
    features: tf.Tensor,
    spec: HeadSpec,
    training: tf.Tensor | None = None,
    scope: str = HEAD_SCOPE,
    dropout_seed: tf.Tensor | None = None,
):
    """Hidden Dense+ReLU layers (fc6, fc7, ...), dropout, then the output layer. Returns ``(output, end_points)``.

    For regression the output is the normalised target; for classification it is the logits. Dropout is
    stateless, keyed by ``dropout_seed`` (an int64 [2] tensor the training loop feeds from its seeded generator), so
    a seed reproduces a run exactly.

    With ``spec.members`` = M > 1 every layer holds M independently initialised copies (a leading member axis in
    its weights; see :func:`dense`) and ``output`` is the members' average: the mean of the normalised targets, or
    logits whose softmax is the mean of the members' probabilities. ``end_points["members"]`` holds the members' own
    outputs, shape (n, M, outputs), which the loss trains independently (a deep ensemble in one graph: one Saver, one
    exported graph).
    """
    if training is None:
        training = tf.constant(False)
    if dropout_seed is None:
        dropout_seed = tf.constant([0, 0], tf.int64)
    end_points: dict = {}
    members = spec.members
    net = features
    with tf1.variable_scope(scope):
        for i, units in enumerate(spec.hidden):
            name = f"fc{6 + i}"
            net = dense(net, units, name, tf.nn.relu, members, shared_input=i == 0)
            end_points[name] = net
            if spec.dropout > 0:
                rate, layer_seed = spec.dropout, dropout_seed + tf.constant([0, i], tf.int64)
                net = tf.cond(
                    training,
                    lambda n=net, s=layer_seed: tf.nn.experimental.stateless_dropout(n, rate, seed=s),
                    lambda n=net: n,
                )
        out = dense(net, spec.outputs, "output", members=members, shared_input=not spec.hidden)
        if members > 1:
            stacked = tf.reshape(out, [-1, members, spec.outputs])  # (n, M, outputs)
            end_points["members"] = stacked
            if spec.task == "regression":
                out = tf.reduce_mean(stacked, axis=1)
            else:
                out = tf.reduce_logsumexp(tf.nn.log_softmax(stacked), axis=1) - math.log(members)
        end_points["output"] = out
    return out, end_points


def head_predictions(output: tf.Tensor, spec: HeadSpec) -> tf.Tensor:
    """Regression: the normalised value, shape (n,) (see :meth:`HeadSpec.decode`). Classification: class
    probabilities, shape (n, K)."""
    if spec.task == "regression":
        return output[:, 0]
    return tf.nn.softmax(output)


@dataclass
class History:
    """What a training run did, epoch by epoch. Epochs are counted from 1, as the CLI prints them: ``best_epoch``
    is the epoch whose weights were kept (0: none yet) and ``stopped_epoch`` the last epoch run; the lists hold
    one value per epoch run (``val_loss[best_epoch - 1]`` is the best)."""

    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_metric: list = field(default_factory=list)
    best_epoch: int = 0
    stopped_epoch: int = 0
    metric_name: str = ""

    @property
    def best_val_metric(self) -> float:
        """The validation metric (accuracy, or RMSE in target units) of the kept epoch; NaN when there is none."""
        return float(self.val_metric[self.best_epoch - 1]) if self.best_epoch > 0 else float("nan")

    def to_dict(self) -> dict:
        """The history as plain data (JSON-ready)."""
        return dataclasses.asdict(self)


class HeadGraph:
    """A head built on a feature tensor in the current graph, with its loss, optimiser and Saver.

    ``features`` may be the output of the conv stack wrapped in ``placeholder_with_default``: training feeds cached
    features into it and never runs the conv stack; prediction feeds images and runs both.
    """

    def __init__(
        self,
        features: tf.Tensor,
        spec: HeadSpec,
        learning_rate: float = 1e-3,
        backbone_variables=(),
        backbone_learning_rate: float | None = None,
        scope: str = HEAD_SCOPE,
    ):
        self.spec = spec
        self.features = features
        self.training = tf1.placeholder_with_default(False, [], name="training")
        self.dropout_seed = tf1.placeholder_with_default(tf.constant([0, 0], tf.int64), [2], name="dropout_seed")
        dim = int(features.shape[-1]) if len(features.shape) == 2 else None
        with tf1.variable_scope(scope):
            # Standardisation of the inputs, set by `fit` from the training features and saved with the head:
            # x -> (x - mean) / std, a per-feature mean and one overall scale.
            self.input_scale = tf1.get_variable("input_scale", [], tf.float32, tf1.ones_initializer(), trainable=False)
            self.input_mean = (
                tf1.get_variable("input_mean", [dim], tf.float32, tf1.zeros_initializer(), trainable=False)
                if dim
                else None
            )
        self._scale_value = tf1.placeholder(tf.float32, [], name="input_scale_value")
        self._mean_value = tf1.placeholder(tf.float32, [dim], name="input_mean_value") if dim else None
        set_ops = [self.input_scale.assign(self._scale_value)]
        if self.input_mean is not None:
            set_ops.append(self.input_mean.assign(self._mean_value))
        self._set_standardisation = tf.group(*set_ops)
        standardised = (features - self.input_mean if dim else features) * self.input_scale
        self.output, self.end_points = build_head(standardised, spec, self.training, scope, self.dropout_seed)
        self.predictions = head_predictions(self.output, spec)
        self.variables = tf1.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES, scope=scope + "/")
        self.backbone_variables = list(backbone_variables)

        # Each ensemble member is trained on its own loss (their mean): the members stay independent.
        outputs = self.end_points.get("members", self.output[:, None, :])
        if spec.task == "regression":
            self.targets = tf1.placeholder(tf.float32, [None], name="targets")  # normalised
            per_example = tf.reduce_mean(tf.square(outputs[:, :, 0] - self.targets[:, None]), axis=1)
        else:
            self.targets = tf1.placeholder(tf.int64, [None], name="targets")
            labels = tf.tile(self.targets[:, None], [1, spec.members])
            per_example = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=outputs), axis=1
            )
        self.sample_weights = tf1.placeholder_with_default(tf.ones_like(per_example), [None], name="sample_weights")
        self.data_loss = tf.reduce_sum(per_example * self.sample_weights) / tf.reduce_sum(self.sample_weights)
        penalty = tf.add_n([tf.nn.l2_loss(v) for v in self.variables if v.name.endswith("weights:0")])
        # Per member, as for a single head: the data loss is the members' mean, so is the penalty.
        self.loss = self.data_loss + spec.l2 / spec.members * penalty

        self.learning_rate = learning_rate
        head_opt = tf1.train.AdamOptimizer(learning_rate)
        ops = [head_opt.minimize(self.loss, var_list=self.variables)]
        if self.backbone_variables:
            lr = backbone_learning_rate if backbone_learning_rate is not None else learning_rate / 10
            ops.append(tf1.train.AdamOptimizer(lr).minimize(self.loss, var_list=self.backbone_variables))
        self.train_op = tf.group(*ops)
        trainable = self.variables + self.backbone_variables
        # Optimiser slots live in global variables; everything this head created is initialised together.
        self.init_op = tf1.variables_initializer(self._own_variables())
        self.standardisation_variables = [v for v in (self.input_scale, self.input_mean) if v is not None]
        self.saver = tf1.train.Saver(
            var_list=trainable + self.standardisation_variables, max_to_keep=1, save_relative_paths=True
        )
        self._assign_placeholders = [tf1.placeholder(v.dtype.base_dtype, v.shape) for v in trainable]
        self._assign_op = tf.group(*[v.assign(p) for v, p in zip(trainable, self._assign_placeholders)])
        self._trainable = trainable

    def _own_variables(self):
        from vggtransfer.nets.vgg import CONV_VARIABLES

        conv = set(id(v) for v in tf1.get_collection(CONV_VARIABLES))
        return [v for v in tf1.global_variables() if id(v) not in conv]

    def set_standardisation(self, sess, x_train=None) -> None:
        """Centre inputs on the training mean and scale by 1 / their overall std (identity when x_train is None)."""
        feed: dict = {self._scale_value: 1.0}
        if self._mean_value is not None:
            feed[self._mean_value] = np.zeros(self._mean_value.shape, np.float32)
        if x_train is not None and self._mean_value is not None:
            mean = np.mean(x_train, axis=0, dtype=np.float64)
            # the overall std in chunks of rows: no float64 copy of a large x_train (one chunk below CHUNK_ROWS)
            squares = sum(
                float(((x_train[a : a + CHUNK_ROWS] - mean) ** 2).sum()) for a in range(0, len(x_train), CHUNK_ROWS)
            )
            std = float(np.sqrt(squares / x_train.size))
            feed = {self._mean_value: mean.astype(np.float32), self._scale_value: 1.0 / std if std > 0 else 1.0}
        sess.run(self._set_standardisation, feed)

    def reset(self, sess, seed: int) -> None:
        """Seeded Glorot-uniform head weights, zero biases and fresh optimiser state (a run is reproducible).

        Trainable backbone variables (fine-tuning) keep their current values.
        """
        rng = np.random.default_rng(seed)
        values = []
        for v in self.variables:
            shape = v.shape.as_list()
            if v.name.endswith("weights:0"):  # (in, out), or (members, in, out): Glorot per member
                limit = np.sqrt(6.0 / (shape[-2] + shape[-1]))
                values.append(rng.uniform(-limit, limit, shape).astype(np.float32))
            else:
                values.append(np.zeros(shape, np.float32))
        backbone = sess.run(self.backbone_variables) if self.backbone_variables else []
        sess.run(self.init_op)
        self.set_weights(sess, values + backbone)

    # --- weights snapshots (early stopping keeps the best in memory) ---------------------------------------------
    def get_weights(self, sess) -> list:
        """The current values of the trainable variables (head and trainable backbone)."""
        return sess.run(self._trainable)

    def set_weights(self, sess, values) -> None:
        """Assign values returned by :meth:`get_weights`."""
        sess.run(self._assign_op, dict(zip(self._assign_placeholders, values)))

    # --- training on cached features ------------------------------------------------------------------------------
    def fit(
        self,
        sess,
        x_train,
        y_train,
        x_val=None,
        y_val=None,
        *,
        epochs: int = 100,
        batch_size: int = 32,
        patience: int = 15,
        seed: int = 0,
        class_weights=None,
        progress: bool | None = None,
        augment_fn=None,
        standardize: bool = True,
        desc: str = "train head",
    ) -> History:
        """Train on arrays of features (or images, when ``features`` is the image input of a fine-tuned graph).

        Regression targets must already be normalised (see ``HeadSpec.target_mean/target_scale``). Validation
        loss drives early stopping; the best weights are restored at the end. With ``standardize`` the inputs are
        centred on their training mean and scaled by 1 / their standard deviation (saved with the head).
        """
        n = len(x_train)
        if n == 0:
            raise ValueError("no training examples")
        if len(y_train) != n:
            raise ValueError(f"{n} training inputs but {len(y_train)} targets")
        self.set_standardisation(sess, x_train if standardize else None)
        rng = np.random.default_rng(seed)
        weights_train = None
        if class_weights is not None:
            weights_train = np.asarray(class_weights, np.float32)[np.asarray(y_train)]
        history = History(metric_name="accuracy" if self.spec.task == "classification" else "rmse")
        best, best_loss, waited = None, math.inf, 0
        steps = max(1, math.ceil(n / batch_size))
        bar = progress_bar(range(epochs), desc=desc, progress=progress, unit="epoch", leave=False)
        for epoch in bar:
            order = rng.permutation(n)
            total = 0.0
            for s in range(steps):
                idx = np.sort(order[s * batch_size : (s + 1) * batch_size])
                xb = x_train[idx] if augment_fn is None else augment_fn(x_train[idx], rng)
                feed = {
                    self.features: xb,
                    self.targets: y_train[idx],
                    self.training: True,
                    self.dropout_seed: rng.integers(0, 2**62, size=2),
                }
                if weights_train is not None:
                    feed[self.sample_weights] = weights_train[idx]
                _, loss = sess.run([self.train_op, self.data_loss], feed)
                total += loss * len(idx)
            history.train_loss.append(total / n)
            if x_val is not None and len(x_val):
                val_loss, metric = self.evaluate(sess, x_val, y_val, batch_size=max(batch_size, 64))
            else:
                val_loss, metric = history.train_loss[-1], float("nan")
            history.val_loss.append(val_loss)
            history.val_metric.append(metric)
            bar.set_postfix(train=f"{history.train_loss[-1]:.4f}", val=f"{val_loss:.4f}")
            if val_loss < best_loss - 1e-7:
                best_loss, best, waited = val_loss, self.get_weights(sess), 0
                history.best_epoch = epoch + 1
            else:
                waited += 1
                if waited >= patience:
                    break
        history.stopped_epoch = epoch + 1
        if best is not None:
            self.set_weights(sess, best)
        return history

    def evaluate(self, sess, x, y, batch_size: int = 64) -> tuple:
        """(mean loss, metric) on arrays: metric is accuracy (classification) or RMSE in target units."""
        losses, outputs = [], []
        for s in range(0, len(x), batch_size):
            loss, out = sess.run(
                [self.data_loss, self.output],
                {self.features: x[s : s + batch_size], self.targets: y[s : s + batch_size]},
            )
            losses.append(loss * len(x[s : s + batch_size]))
            outputs.append(out)
        out = np.concatenate(outputs)
        if self.spec.task == "classification":
            metric = float(np.mean(out.argmax(1) == np.asarray(y)))
        else:
            metric = float(np.sqrt(np.mean((out[:, 0] - y) ** 2)) * self.spec.target_scale)
        return float(np.sum(losses) / len(x)), metric

    def predict_features(self, sess, x, batch_size: int = 256) -> np.ndarray:
        """Predictions (target units, or class probabilities) from an array of features."""
        if not len(x):
            shape = (0,) if self.spec.task == "regression" else (0, self.spec.outputs)
            return np.zeros(shape, np.float64)
        raw = np.concatenate(
            [sess.run(self.predictions, {self.features: x[s : s + batch_size]}) for s in range(0, len(x), batch_size)]
        )
        return self.spec.decode(raw)


@dataclass
class TrainReport:
    """What :meth:`Vgg16.train` did: the history, the split, and the images it skipped."""

    history: History
    train_index: np.ndarray
    val_index: np.ndarray
    skipped: list = field(default_factory=list)  # ImageError for each unusable image
    seconds_features: float = 0.0
    seconds_head: float = 0.0
