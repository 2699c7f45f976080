"""Export any trained model as a TensorFlow SavedModel that serves image bytes and needs no vggtransfer.

``export_saved_model(model_or_dir, path)`` (CLI: ``vggtransfer export --model DIR --out PATH``) writes a TF1-style
SavedModel (``tf.compat.v1.saved_model.Builder``, tag ``serve``) with two signatures:

- ``serving_default``: ``image_bytes`` (string, [n]): encoded JPEG / PNG / GIF / BMP files. Decoding, EXIF
  orientation, conversion to RGB, the view (crop / whole image at each scale, flip) and the resize are
  :mod:`vggtransfer.graph_image`, the graph twin of :func:`vggtransfer.images.prepare` (equal pixel for pixel).
- ``serving_images``: ``images`` (float32, [n, h, w, 3]): RGB in [0, 1], quantised to 8 bits and prepared as
  ``model.predict_arrays`` prepares uint8 arrays.

Outputs: ``valid`` (bool [n]: False for an item that could not be decoded: it is dropped from the computation,
the others are still predicted) and, for regressors, ``value`` (float32 [n], target units, NaN where not valid);
for classifiers ``probabilities`` (float32 [n, K], NaN rows where not valid), ``class_index`` (int64 [n], -1) and
``class_name`` (string [n], "").

Every model kind exports: regressor and softmax classifier (a Dense head on one pooled end point), the linear model
(logistic regression with its standardisation folded into one dense layer), the fine-tuned classifier (its tuned
conv layers), and the auto recipe (its feature blocks, block normalisation, chosen columns and model, and its
calibration). The conv weights are variables of the SavedModel (``variables/``); ``assets/`` holds the model's
``vggtransfer.json``, ``export.json`` (library version, weights sha256, precision, signatures) and ``classes.txt``.

Images of one request are decoded in parallel (tf.data), batched by ``batch_size`` and padded to the largest view
in the batch; masks keep each image's features equal to those of the image alone (see ``vgg_conv(sizes=)``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__
from ._tf import tf, verbose
from . import graph_image as gi
from .featurespec import end_point_names
from .modeldir import MODEL_FILE, ModelError, overlapping

tf1 = tf.compat.v1

EXPORT_FILE = "export.json"
CLASSES_FILE = "classes.txt"
SIGNATURE_BYTES = "serving_default"
SIGNATURE_IMAGES = "serving_images"
EXPORT_PRECISIONS = ("fp32", "bf16")
EXPORT_FORMAT = 1


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
    conv: dict                      # layer -> (W, b) numpy, as the model's session holds them (fine-tuned included)
    view: str                       # crop | whole
    scales: tuple
    flip: bool
    pools: tuple                    # ((end_point, pooling), ...) per scale; pooling avg | max | flatten
    head: Callable
    config: dict                    # the model's vggtransfer.json content
    classes: tuple = ()
    head_values: dict = field(default_factory=dict)  # head variable name -> numpy value

    @property
    def deepest(self) -> str:
        """The last end point the pools read (where the conv stack stops)."""
        names = end_point_names(self.arch)
        return max((ep for ep, _ in self.pools), key=names.index)


# --- what each model kind computes ---------------------------------------------------------------------------------
def conv_weights_of(session, graph) -> dict:
    """``{layer: (W, b)}`` from the conv variables of a model's graph (frozen prefix and fine-tuned layers)."""
    from .vgg import CONV_VARIABLES

    variables = graph.get_collection(CONV_VARIABLES)
    values = session.run(variables)
    out: dict = {}
    for v, value in zip(variables, values):
        layer, what = v.op.name.split("/")[-2:]
        out.setdefault(layer, {})[what] = value
    return {layer: (d["weights"], d["biases"]) for layer, d in out.items()}


def head_values_of(session, graph, scope: str = "head") -> dict:
    """Values of a :class:`~vggtransfer.heads.HeadGraph`'s layers and input standardisation (not optimiser slots)."""
    with graph.as_default():
        variables = [v for v in tf1.global_variables() if v.op.name.startswith(scope + "/")
                     and "Adam" not in v.op.name and "beta" not in v.op.name.split("/")[-1]]
    return dict(zip([v.op.name for v in variables], session.run(variables)))


def _dense_head(spec, values: dict, scope: str = "head"):
    """A builder of the :class:`HeadGraph` forward pass (standardisation, hidden layers, output, decoding)."""
    from .heads import build_head, head_predictions

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
    from .select import TIE_BREAK

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
    """:func:`vggtransfer.featurespec.normalise_blocks` as graph ops (float64, then float32 like the library)."""
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
    from .select import columns

    model._require_fitted()
    spec = model.features_spec
    arch = model.feature_config["arch"]
    blocks = spec.blocks(arch)
    cols = np.asarray(columns(blocks, model.fitted["blocks"]))
    extractor = model.attach()
    conv = conv_weights_of(extractor.session, extractor.graph)
    fitted, task, power = model.fitted, model.task, model.power
    values: dict = {}
    if fitted["model"] == "dense":
        values = head_values_of(model.dense.session, model.dense.graph)
        core = _dense_head(model.dense.spec, values)
    elif fitted["model"] == "ridge":
        coef, intercept = np.asarray(fitted["coef"], np.float64), float(fitted["intercept"])
        core = lambda x: tf.linalg.matvec(tf.cast(x, tf.float64), coef, transpose_a=False) + intercept  # noqa: E731
    else:
        coef, intercept = np.asarray(fitted["coef"], np.float64), np.asarray(fitted["intercept"], np.float64)
        core = lambda x: _softmax64(tf.matmul(tf.cast(x, tf.float64), coef.T) + intercept)  # noqa: E731
    calibrate = (_regression_calibration(model.calibration) if task == "regression"
                 else _temperature(float(model.calibration["temperature"])))

    def head(features):
        x = tf.gather(_normalise_blocks(features, blocks, power), cols, axis=1)
        return calibrate(tf.cast(core(x), tf.float64))

    pools = tuple((ep, p) for ep in spec.end_points for p in spec.poolings)
    return ServingPlan("auto", task, arch, conv, spec.view, spec.scales, spec.flip, pools, head, model.config(),
                       tuple(model.classes), values)


def _plan_transfer(model) -> ServingPlan:
    cfg = model.config
    conv = conv_weights_of(model.session, model.extractor.graph)
    values = head_values_of(model.session, model.extractor.graph)
    head = _dense_head(model.spec, values)
    full = {**cfg, "kind": getattr(model, "kind", "regressor"), "head": model.spec.to_dict()}
    return ServingPlan(full["kind"], model.task, cfg["arch"], conv, "crop", (cfg["image_size"],), False,
                       ((cfg["end_point"], cfg["pooling"]),), head, full, tuple(model.spec.classes), values)


def _plan_linear(model) -> ServingPlan:
    cfg = model.config
    model.attach(model._weights_path)
    conv = conv_weights_of(model.extractor.session, model.extractor.graph)
    scale_step, clf = model.pipeline.named_steps["scale"], model.pipeline.named_steps["clf"]
    coef, intercept = np.asarray(clf.coef_, np.float64), np.asarray(clf.intercept_, np.float64)
    if coef.shape[0] == 1:  # binary: one row for class 1 (sklearn's predict_proba is expit = softmax([0, d]))
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, intercept]
    if not isinstance(scale_step, str):  # fold StandardScaler: ((x - m) / s) W^T + b = x (W / s)^T + (b - (m / s) W^T)
        mean, std = np.asarray(scale_step.mean_, np.float64), np.asarray(scale_step.scale_, np.float64)
        coef, intercept = coef / std, intercept - (mean / std) @ coef.T
    full = np.full((len(model.classes), coef.shape[1]), 0.0)
    full_b = np.full(len(model.classes), -1e9)
    full[clf.classes_], full_b[clf.classes_] = coef, intercept

    def head(features):
        return _softmax64(tf.matmul(tf.cast(features, tf.float64), full.T) + full_b)

    meta = {**cfg, "kind": "linear", "classes": list(model.classes), "cv_results": model.cv_results}
    return ServingPlan("linear", "classification", cfg["arch"], conv, "crop", (cfg["image_size"],), False,
                       ((cfg["end_point"], cfg["pooling"]),), head, meta, tuple(model.classes))


def _plan_finetuned(model) -> ServingPlan:
    cfg = model.config
    conv = conv_weights_of(model.session, model.graph)
    values = head_values_of(model.session, model.graph)
    scale = float(model.session.run(model.feature_scale))
    dense = _dense_head(model.spec, values)
    full = {**cfg, "kind": "finetuned", "head": model.spec.to_dict(), "feature_scale": scale}
    return ServingPlan("finetuned", "classification", cfg["arch"], conv, "crop", (cfg["image_size"],), False,
                       (("pool5", cfg["pooling"]),), lambda f: dense(f * scale), full, tuple(model.spec.classes),
                       values)


def serving_plan(model) -> ServingPlan:
    """The :class:`ServingPlan` of a loaded model of any kind."""
    from .auto import AutoModel
    from .finetune import FineTunedClassifier
    from .linear import LinearModel
    from .model import TransferModel

    if isinstance(model, AutoModel):
        return _plan_auto(model)
    if isinstance(model, TransferModel):
        return _plan_transfer(model)
    if isinstance(model, LinearModel):
        return _plan_linear(model)
    if isinstance(model, FineTunedClassifier):
        return _plan_finetuned(model)
    raise ExportError(f"cannot export a {type(model).__name__}: expected a model loaded by vggtransfer.load_model")


# --- the serving graph -----------------------------------------------------------------------------------------------
def _features_graph(plan: ServingPlan, conv_vars: dict, compute_dtype):
    """``features(views, sizes)`` for a padded batch: per scale (and flip), the conv stack on the padded views with
    masks, then each (end point, pooling) over the true area; flips averaged; scales concatenated."""
    from .vgg import pool, vgg_conv

    masked = plan.view == "whole"
    per_scale = 2 if plan.flip else 1

    def pooled_blocks(x, s):
        """Each (end point, pooling) of the batch ``x``; with true sizes ``s``, over each image's true area."""
        _, end_points = vgg_conv(x, conv_vars, arch=plan.arch, final_endpoint=plan.deepest, frozen="given",
                                 sizes=s, compute_dtype=compute_dtype)
        pooled = []
        for ep, p in plan.pools:
            net = tf.cast(end_points[ep], tf.float32)
            if s is not None:
                stride = 2 ** int(ep[4:]) if ep.startswith("pool") else 2 ** (int(ep[4]) - 1)
                if p == "avg":
                    count = tf.cast((s[:, 0] // stride) * (s[:, 1] // stride), tf.float32)
                    pooled.append(tf.reduce_sum(net, axis=[1, 2]) / count[:, None])
                else:
                    pooled.append(tf.reduce_max(net, axis=[1, 2]))
            else:
                pooled.append(pool(net, p))
        return tf.concat(pooled, axis=1)

    def features(views, sizes):
        rows = []
        for q in range(len(plan.scales)):
            batch = [gi.to_unit(views[q * per_scale + f]) for f in range(per_scale)]
            true = [sizes[q * per_scale + f] for f in range(per_scale)]
            n = tf.shape(batch[0])[0]
            if per_scale == 2:  # the flipped views may pad to other shapes: pad both to the larger
                h = tf.maximum(tf.shape(batch[0])[1], tf.shape(batch[1])[1])
                w = tf.maximum(tf.shape(batch[0])[2], tf.shape(batch[1])[2])
                batch = [tf.pad(b, [[0, 0], [0, h - tf.shape(b)[1]], [0, w - tf.shape(b)[2]], [0, 0]]) for b in batch]
            x = tf.concat(batch, axis=0)
            s = tf.concat(true, axis=0)
            if not masked:
                size = plan.scales[q]
                x = tf.ensure_shape(x, [None, size, size, 3])
                f = pooled_blocks(x, None)
            else:  # masks only where some view in the batch is smaller than the padded shape
                shape = tf.shape(x)
                uniform = tf.reduce_all(tf.logical_and(tf.equal(s[:, 0], shape[1]), tf.equal(s[:, 1], shape[2])))
                f = tf.cond(uniform, lambda: pooled_blocks(x, None), lambda: pooled_blocks(x, s))
            if per_scale == 2:
                f = (f[:n] + f[n:]) / 2.0
            rows.append(f)
        return tf.concat(rows, axis=1)

    return features


def _item_views(plan: ServingPlan):
    def views(img):
        out = []
        for q in plan.scales:
            v = gi.prepare(img, q, plan.view)
            out.append(v)
            if plan.flip:
                out.append(v[:, ::-1])
        return out

    return views


def _valid_items(items, max_pixels):
    """Indices of the encoded images that decode (tf.data runs :func:`graph_image.decodes` in parallel and drops
    an item whose decoding fails; nothing else about a bad item can fail later)."""
    n = tf.shape(items)[0]
    ds = tf.data.Dataset.from_tensor_slices((tf.range(n), items))
    ds = ds.map(lambda i, b: (i, gi.decodes(b, max_pixels)), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    ds = ds.ignore_errors().map(lambda i, _: i).batch(1024)
    return ds.reduce(tf.zeros([0], tf.int32), lambda acc, e: tf.concat([acc, e], 0))


def _pipeline(plan, items, decode, features, batch_size: int, valid=None):
    """``(indices, features)`` of the items (``valid``: their indices; default all). Views are prepared in a
    while loop (parallel iterations) in the main graph, padded to the largest per view slot, and the conv stack
    runs on ``batch_size`` of them at a time (masks keep each image's features its own)."""
    if valid is None:
        valid = tf.range(tf.shape(items)[0])
    k = tf.shape(valid)[0]
    views_of = _item_views(plan)
    slots = len(plan.scales) * (2 if plan.flip else 1)
    dim = _feature_dim(plan)

    def prepare(j, arrays, shapes):
        views = views_of(decode(items[valid[j]]))
        return (j + 1, [a.write(j, v) for a, v in zip(arrays, views)],
                [s.write(j, tf.shape(v)[:2]) for s, v in zip(shapes, views)])

    arrays = [tf.TensorArray(tf.uint8, size=k, infer_shape=False, element_shape=[None, None, 3])
              for _ in range(slots)]
    shapes = [tf.TensorArray(tf.int32, size=k, element_shape=[2]) for _ in range(slots)]
    _, arrays, shapes = tf.while_loop(lambda j, *_: j < k, prepare, [tf.constant(0), arrays, shapes],
                                      parallel_iterations=8)
    sizes = [tf.reshape(s.stack(), [-1, 2]) for s in shapes]

    def body(start, acc):
        stop = tf.minimum(start + batch_size, k)
        batch, true = [], []
        for a, sz in zip(arrays, sizes):
            part = sz[start:stop]
            h, w = tf.reduce_max(part[:, 0]), tf.reduce_max(part[:, 1])
            padded = tf.map_fn(lambda j: tf.pad(a.read(j), [[0, h - tf.shape(a.read(j))[0]],
                                                            [0, w - tf.shape(a.read(j))[1]], [0, 0]]),
                               tf.range(start, stop), fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
            batch.append(padded)
            true.append(part)
        return stop, acc.write(start // batch_size, features(batch, true))

    acc = tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False, element_shape=[None, dim])
    _, acc = tf.while_loop(lambda start, _: start < k, body, [tf.constant(0), acc], parallel_iterations=1)
    feats = tf.cond(k > 0, lambda: acc.concat(), lambda: tf.zeros([0, dim], tf.float32))
    return valid, tf.ensure_shape(feats, [None, dim])


def _feature_dim(plan: ServingPlan) -> int:
    from .featurespec import end_point_channels
    from .vgg import feature_dim

    per_scale = 0
    for ep, p in plan.pools:
        if p == "flatten":
            per_scale += feature_dim(plan.arch, ep, p, plan.scales[0])
        else:
            per_scale += end_point_channels(plan.arch)[ep]
    return per_scale * len(plan.scales)


def _outputs(plan: ServingPlan, n, indices, predictions) -> dict:
    valid = tf.scatter_nd(indices[:, None], tf.ones_like(indices, tf.bool), [n])
    if plan.task == "regression":
        value = tf.tensor_scatter_nd_update(tf.fill([n], np.float32(np.nan)), indices[:, None],
                                            tf.cast(predictions, tf.float32))
        return {"valid": valid, "value": value}
    k = len(plan.classes)
    probs = tf.tensor_scatter_nd_update(tf.fill([n, k], np.float32(np.nan)), indices[:, None],
                                        tf.cast(predictions, tf.float32))
    top = tf.tensor_scatter_nd_update(tf.fill([n], np.int64(-1)), indices[:, None],
                                      tf.argmax(predictions, axis=1, output_type=tf.int64))
    names = tf.constant(list(plan.classes) + [""])
    return {"valid": valid, "probabilities": probs, "class_index": top,
            "class_name": tf.gather(names, tf.where(top < 0, np.int64(k), top))}


def build_serving_graph(plan: ServingPlan, precision: str = "fp32", batch_size: int = 16,
                        max_pixels: int | None = None):
    """The export graph: ``(graph, {signature: (inputs, outputs)}, feeds)``; ``feeds`` initialise the weights."""
    from .vgg import _param

    if precision not in EXPORT_PRECISIONS:
        raise ExportError(f"precision must be one of {EXPORT_PRECISIONS}, got {precision!r}")
    compute_dtype = tf.bfloat16 if precision == "bf16" else None
    graph = tf.Graph()
    with graph.as_default():
        conv_vars = {}
        with tf1.variable_scope(plan.arch):
            for layer, (w, b) in plan.conv.items():
                with tf1.variable_scope(layer):
                    conv_vars[layer] = (_param("weights", w, False, "variable"), _param("biases", b, False, "variable"))
        features = _features_graph(plan, conv_vars, compute_dtype)

        def decode_bytes(data):  # valid items only: checked in _valid_items
            return gi.decode_rgb(data, checked=True)

        def decode_float(img):
            return tf.cast(tf.round(tf.clip_by_value(img, 0.0, 1.0) * 255.0), tf.uint8)

        signatures = {}
        image_bytes = tf1.placeholder(tf.string, [None], name="image_bytes")
        valid = _valid_items(image_bytes, max_pixels)
        idx, feats = _pipeline(plan, image_bytes, decode_bytes, features, batch_size, valid)
        out = _outputs(plan, tf.shape(image_bytes)[0], idx, plan.head(feats))
        signatures[SIGNATURE_BYTES] = ({"image_bytes": image_bytes}, out)
        images = tf1.placeholder(tf.float32, [None, None, None, 3], name="images")
        idx2, feats2 = _pipeline(plan, images, decode_float, features, batch_size)
        out2 = _outputs(plan, tf.shape(images)[0], idx2, plan.head(feats2))
        signatures[SIGNATURE_IMAGES] = ({"images": images}, out2)
        head_vars = [v for v in tf1.global_variables() if v.op.name in plan.head_values]
    return graph, signatures, head_vars


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def is_export_dir(path) -> bool:
    """True for a folder written by :func:`export_saved_model`."""
    path = Path(path)
    return (path / "saved_model.pb").is_file() and (path / "assets" / EXPORT_FILE).is_file()


def check_export_target(path, protect=()) -> Path:
    """The absolute target of an export; only a previous export is ever replaced (anything else is refused)."""
    given = Path(path)
    target = Path(os.path.abspath(given.expanduser()))
    if target.exists() and not target.is_dir():
        raise ExportError(f"{given}: exists and is a file; choose another --out path")
    if target.is_dir() and any(target.iterdir()) and not is_export_dir(target):
        raise ExportError(f"{given}: exists and is a folder that is not a vggtransfer export (no saved_model.pb and "
                          f"assets/{EXPORT_FILE}); its files are left untouched. Choose a new --out path")
    clash = overlapping(target, protect)
    if clash is not None:
        raise ExportError(f"{given}: overlaps {clash}; export outside the model folder")
    return target


def export_saved_model(model, path, *, precision: str = "fp32", batch_size: int = 16, weights_path=None,
                       threads: int | None = None, max_pixels: int | None = None, protect=()) -> dict:
    """Export ``model`` (a loaded model of any kind, or a model directory) as a SavedModel at ``path``.

    ``max_pixels``: the decompression-bomb cap built into the graph (default: the library's, see
    :func:`vggtransfer.images.max_pixels_limit`); larger images are reported not valid.
    Written atomically beside ``path`` and swapped in; only a previous export is replaced. Returns a report:
    ``{path, size_bytes, conv_bytes, signatures, precision, seconds}``.
    """
    from .classifier import load_model
    from .images import max_pixels_limit
    from .runtime import new_session
    from .vgg import initialize

    t0 = time.perf_counter()
    if precision not in EXPORT_PRECISIONS:
        raise ExportError(f"precision must be one of {EXPORT_PRECISIONS}, got {precision!r}")
    if batch_size < 1:
        raise ExportError(f"batch_size must be >= 1, got {batch_size}")
    owned = False
    if isinstance(model, (str, os.PathLike)):
        protect = tuple(protect) + (model,)
        model = load_model(model, weights_path, precision="fp32", threads=threads)
        owned = True
    target = check_export_target(path, protect)
    try:
        plan = serving_plan(model)
        graph, signatures, head_vars = build_serving_graph(plan, precision, batch_size, max_pixels)
    finally:
        if owned and hasattr(model, "close"):
            model.close()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staging = tmp_root / "export"
    logger, level = tf.get_logger(), tf.get_logger().level
    if not verbose():
        logger.setLevel("ERROR")  # TF1 SavedModel builder deprecation notices
    try:
        with graph.as_default():
            session = new_session(graph, "fp32", threads)
            initialize(session)
            if head_vars:
                feeds = {tf1.placeholder(v.dtype.base_dtype, v.shape): plan.head_values[v.op.name] for v in head_vars}
                session.run([v.assign(p) for v, p in zip(head_vars, feeds)], feeds)
            builder = tf1.saved_model.Builder(str(staging))
            sig_defs = {name: tf1.saved_model.predict_signature_def(inputs, outputs)
                        for name, (inputs, outputs) in signatures.items()}
            builder.add_meta_graph_and_variables(session, [tf1.saved_model.tag_constants.SERVING],
                                                 signature_def_map=sig_defs, strip_default_attrs=True)
            builder.save()
            session.close()
        assets = staging / "assets"
        assets.mkdir(exist_ok=True)
        conv_bytes = int(sum(w.nbytes + b.nbytes for w, b in plan.conv.values()))
        meta = {"format": EXPORT_FORMAT, "library_version": __version__, "kind": plan.kind, "task": plan.task,
                "arch": plan.arch, "weights_sha256": plan.config.get("weights_sha256"), "precision": precision,
                "batch_size": batch_size, "max_pixels": max_pixels_limit(max_pixels), "classes": list(plan.classes),
                "views": {"view": plan.view, "scales": list(plan.scales), "flip": plan.flip,
                          "pools": [list(p) for p in plan.pools]},
                "signatures": {SIGNATURE_BYTES: {"inputs": {"image_bytes": "string [n]"}},
                               SIGNATURE_IMAGES: {"inputs": {"images": "float32 [n, h, w, 3] in [0, 1]"}},
                               "outputs": sorted(signatures[SIGNATURE_BYTES][1])},
                "conv_bytes": conv_bytes, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (assets / EXPORT_FILE).write_text(json.dumps(meta, indent=2))
        (assets / MODEL_FILE).write_text(json.dumps({k: v for k, v in plan.config.items() if not k.startswith("_")},
                                                    indent=2, default=str))
        if plan.classes:
            (assets / CLASSES_FILE).write_text("".join(c + "\n" for c in plan.classes))
        for f in staging.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = tmp_root / "previous"
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
    finally:
        logger.setLevel(level)
        shutil.rmtree(tmp_root, ignore_errors=True)
    return {"path": str(target), "size_bytes": _dir_size(target), "conv_bytes": conv_bytes,
            "signatures": {k: sorted(v[1]) for k, v in signatures.items()}, "precision": precision,
            "seconds": time.perf_counter() - t0}


__all__ = ["export_saved_model", "serving_plan", "build_serving_graph", "ServingPlan", "ExportError",
           "is_export_dir", "SIGNATURE_BYTES", "SIGNATURE_IMAGES", "EXPORT_PRECISIONS"]
