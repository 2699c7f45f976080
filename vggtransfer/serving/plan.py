"""What a served model computes, per model kind (:class:`ServingPlan`): the architecture, the views and feature blocks,
the conv weights (frozen or fine-tuned), and the head as plain arrays and small graph functions (Dense layers,
folded standardisation, calibration). :mod:`vggtransfer.serving.export` builds the SavedModel from a plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from vggtransfer.core.tf import tf
from vggtransfer.features.spec import end_point_names
from vggtransfer.models.modeldir import ModelError
from vggtransfer.models.solvers import logreg_arrays

tf1 = tf.compat.v1


class ExportError(ModelError):
    """A model or target path that cannot be exported (the message names it)."""


@dataclass
class ServingPlan:
    """What the exported graph computes, in plain data: the views, the conv weights, the pooled end points, and
    ``head(features) -> predictions`` (a graph builder; regression (n,) values, classification (n, K) probabilities).
    """

    kind: str
    task: str
    arch: str
    conv: dict  # layer -> (W, b) numpy, as the model's session holds them (fine-tuned included)
    view: str  # crop | whole
    scales: tuple
    flip: bool
    pools: tuple  # ((end_point, pooling), ...) per scale; pooling avg | max | flatten
    head: Callable
    config: dict  # the model's vggtransfer.json content
    classes: tuple = ()
    head_values: dict = field(default_factory=dict)  # head variable name -> numpy value
    #: The features hold the mirror image's blocks after the photo's (``FeatureSpec.mirror``); ``head`` averages
    #: its predictions over the two.
    mirror: bool = False

    @property
    def runs_mirrored(self) -> bool:
        """Each view also runs mirrored (``flip`` averages the two, ``mirror`` keeps both)."""
        return self.flip or self.mirror

    @property
    def deepest(self) -> str:
        """The last end point the pools read (where the conv stack stops)."""
        names = end_point_names(self.arch)
        return max((ep for ep, _ in self.pools), key=names.index)


# --- what each model kind computes ---------------------------------------------------------------------------------
def conv_weights_of(session, graph) -> dict:
    """``{layer: (W, b)}`` from the conv variables of a model's graph (frozen prefix and fine-tuned layers)."""
    from vggtransfer.nets.vgg import CONV_VARIABLES

    variables = graph.get_collection(CONV_VARIABLES)
    values = session.run(variables)
    out: dict = {}
    for v, value in zip(variables, values):
        layer, what = v.op.name.split("/")[-2:]
        out.setdefault(layer, {})[what] = value
    return {layer: (d["weights"], d["biases"]) for layer, d in out.items()}


def head_values_of(session, graph, scope: str = "head") -> dict:
    """Values of a :class:`~vggtransfer.models.heads.HeadGraph`'s layers and input standardisation (not optimiser slots)."""
    with graph.as_default():
        variables = [
            v
            for v in tf1.global_variables()
            if v.op.name.startswith(scope + "/") and "Adam" not in v.op.name and "beta" not in v.op.name.split("/")[-1]
        ]
    return dict(zip([v.op.name for v in variables], session.run(variables)))


def _dense_head(spec, values: dict, scope: str = "head"):
    """A builder of the :class:`HeadGraph` forward pass (standardisation, hidden layers, output, decoding)."""
    from vggtransfer.models.heads import build_head, head_predictions

    def build(x):
        x = (x - values[f"{scope}/input_mean"]) * values[f"{scope}/input_scale"]
        with tf1.variable_scope(tf1.get_variable_scope(), reuse=tf1.AUTO_REUSE):
            out, _ = build_head(x, spec, scope=scope)
        pred = head_predictions(out, spec)
        if spec.task == "regression":
            return tf.cast(pred, tf.float64) * spec.target_scale + spec.target_mean
        return pred

    return build


def _softmax64(logits):
    return tf.nn.softmax(tf.cast(logits, tf.float64), axis=1)


def _interp(x, xp, fp):
    """``np.interp(x, xp, fp)`` for increasing ``xp`` (values outside clamp to the ends)."""
    xp, fp = tf.constant(np.asarray(xp, np.float64)), tf.constant(np.asarray(fp, np.float64))
    if int(xp.shape[0]) == 1:
        return tf.fill(tf.shape(x), fp[0])
    j = tf.clip_by_value(tf.searchsorted(xp, x, side="right") - 1, 0, int(xp.shape[0]) - 2)
    x0, x1, y0, y1 = tf.gather(xp, j), tf.gather(xp, j + 1), tf.gather(fp, j), tf.gather(fp, j + 1)
    y = y0 + (y1 - y0) / (x1 - x0) * (tf.clip_by_value(x, xp[0], xp[-1]) - x0)
    return y


def _regression_calibration(cal: dict):
    from vggtransfer.models.calibration import TIE_BREAK

    kind = cal["kind"]
    if kind == "identity":
        return lambda p: p
    if kind == "linear":
        return lambda p: cal["slope"] * p + cal["intercept"]
    if kind == "isotonic":
        mean_x = float(np.mean(cal["x"]))
        return lambda p: _interp(p, cal["x"], cal["y"]) + TIE_BREAK * (p - mean_x)
    raise ExportError(f"unknown calibration kind {kind!r}")


def _temperature(t: float):
    def apply(p):
        lp = tf.math.log(tf.maximum(tf.cast(p, tf.float64), 1e-300)) / t
        return tf.nn.softmax(lp, axis=1)

    return apply


def _normalise_blocks(x, blocks, power: float):
    """:func:`vggtransfer.features.spec.normalise_blocks` as graph ops (float64, then float32 like the library)."""
    x = tf.cast(x, tf.float64)
    parts = []
    for _, a, b in blocks:
        v = x[:, a:b]
        if power != 1:
            v = tf.sign(v) * tf.pow(tf.abs(v), power)
        norm = tf.norm(v, axis=1, keepdims=True)
        parts.append(v / tf.maximum(norm, 1e-12))
    return tf.cast(tf.concat(parts, axis=1), tf.float32)


def _plan_auto(model) -> ServingPlan:
    from vggtransfer.models.select import columns

    model._require_fitted()
    spec = model.features_spec
    arch = model.feature_config["arch"]
    blocks = spec.blocks(arch)
    cols = np.asarray(columns(blocks, model.fitted["blocks"]))
    extractor = model.attach()
    conv = conv_weights_of(extractor.session, extractor.graph)
    fitted, task, power = model.fitted, model.task, model.power
    values: dict = {}
    if model.dense is not None:
        values = head_values_of(model.dense.session, model.dense.graph)

    def core_of(kind: str):
        """One fitted model's uncalibrated outputs as graph ops (``AutoModel._raw``)."""
        if kind == "dense":
            return _dense_head(model.dense.spec, values)
        arrays = fitted["arrays"][kind]
        if task == "regression":  # ridge, the one linear model for targets
            w, b = np.asarray(arrays["coef"], np.float64), float(arrays["intercept"])
            return lambda x: tf.linalg.matvec(tf.cast(x, tf.float64), w, transpose_a=False) + b
        # classes' linear models (logistic regression, least squares): softmax of the scores
        coef, intercept = np.asarray(arrays["coef"], np.float64), np.asarray(arrays["intercept"], np.float64)
        return lambda x: _softmax64(tf.matmul(tf.cast(x, tf.float64), coef.T) + intercept)

    if fitted["model"] == "average":  # each family's probabilities at its own temperature, averaged
        parts = [(core_of(p["model"]), _temperature(float(p["temperature"]))) for p in fitted["parts"]]

        def core(x):
            return tf.add_n([cal(tf.cast(c(x), tf.float64)) for c, cal in parts]) / float(len(parts))

    else:
        core = core_of(fitted["model"])
    calibrate = (
        _regression_calibration(model.calibration)
        if task == "regression"
        else _temperature(float(model.calibration["temperature"]))
    )

    views = spec.views(arch)

    def head(features):  # AutoModel.predict_features: one prediction per view of the row, averaged
        outs = [
            calibrate(tf.cast(core(tf.gather(_normalise_blocks(features, b, power), cols, axis=1)), tf.float64))
            for b in views
        ]
        return tf.add_n(outs) / float(len(outs))

    pools = tuple((ep, p) for ep in spec.end_points for p in spec.poolings)
    return ServingPlan(
        "auto",
        task,
        arch,
        conv,
        spec.view,
        spec.scales,
        spec.flip,
        pools,
        head,
        model.config(),
        tuple(model.classes),
        values,
        mirror=spec.mirror,
    )


def _plan_transfer(model) -> ServingPlan:
    cfg = model.config
    conv = conv_weights_of(model.session, model.extractor.graph)
    values = head_values_of(model.session, model.extractor.graph)
    head = _dense_head(model.spec, values)
    full = {**cfg, "kind": model.kind or "regressor", "head": model.spec.to_dict()}
    return ServingPlan(
        full["kind"],
        model.task,
        cfg["arch"],
        conv,
        "crop",
        (cfg["image_size"],),
        False,
        ((cfg["end_point"], cfg["pooling"]),),
        head,
        full,
        tuple(model.spec.classes),
        values,
    )


def _plan_linear(model) -> ServingPlan:
    cfg = model.config
    model.attach(model._weights_path)
    conv = conv_weights_of(model.extractor.session, model.extractor.graph)
    scale_step, clf = model.pipeline.named_steps["scale"], model.pipeline.named_steps["clf"]
    full, full_b = logreg_arrays(clf, len(model.classes))  # a row per class (binary, absent classes)
    if not isinstance(scale_step, str):  # fold StandardScaler: ((x - m) / s) W^T + b = x (W / s)^T + (b - (m / s) W^T)
        mean, std = np.asarray(scale_step.mean_, np.float64), np.asarray(scale_step.scale_, np.float64)
        full, full_b = full / std, full_b - (mean / std) @ full.T

    def head(features):
        return _softmax64(tf.matmul(tf.cast(features, tf.float64), full.T) + full_b)

    meta = {**cfg, "kind": "linear", "classes": list(model.classes), "cv_results": model.cv_results}
    return ServingPlan(
        "linear",
        "classification",
        cfg["arch"],
        conv,
        "crop",
        (cfg["image_size"],),
        False,
        ((cfg["end_point"], cfg["pooling"]),),
        head,
        meta,
        tuple(model.classes),
    )


def _plan_finetuned(model) -> ServingPlan:
    cfg = model.config
    conv = conv_weights_of(model.session, model.graph)
    values = head_values_of(model.session, model.graph)
    scale = float(model.session.run(model.feature_scale))
    dense = _dense_head(model.spec, values)
    full = {**cfg, "kind": "finetuned", "head": model.spec.to_dict(), "feature_scale": scale}
    return ServingPlan(
        "finetuned",
        "classification",
        cfg["arch"],
        conv,
        "crop",
        (cfg["image_size"],),
        False,
        (("pool5", cfg["pooling"]),),
        lambda f: dense(f * scale),
        full,
        tuple(model.spec.classes),
        values,
    )


def serving_plan(model) -> ServingPlan:
    """The :class:`ServingPlan` of a loaded model of any kind."""
    from vggtransfer.models.auto import AutoModel
    from vggtransfer.models.finetune import FineTunedClassifier
    from vggtransfer.models.linear import LinearModel
    from vggtransfer.models.transfer import TransferModel

    if isinstance(model, AutoModel):
        return _plan_auto(model)
    if isinstance(model, TransferModel):
        return _plan_transfer(model)
    if isinstance(model, LinearModel):
        return _plan_linear(model)
    if isinstance(model, FineTunedClassifier):
        return _plan_finetuned(model)
    raise ExportError(f"cannot export a {type(model).__name__}: expected a model loaded by vggtransfer.load_model")
