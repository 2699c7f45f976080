"""Export any trained model as a TensorFlow SavedModel that serves image bytes and needs no vggtransfer.

``export_saved_model(model_or_dir, path)`` (CLI: ``vggtransfer export --model DIR --out PATH``) writes a TF1-style
SavedModel (``tf.compat.v1.saved_model.Builder``, tag ``serve``) with two signatures:

- ``serving_default``: ``image_bytes`` (string, [n]): encoded JPEG / PNG / GIF / BMP files. Decoding, EXIF
  orientation, conversion to RGB, the view (crop / whole image at each scale, flip) and the resize are
  :mod:`vggtransfer.serving.graph_image`, the graph twin of :func:`vggtransfer.data.images.prepare` (equal pixel for pixel).
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
from pathlib import Path

import numpy as np

from vggtransfer import __version__
from vggtransfer.core.tf import tf, verbose
from vggtransfer.models.modeldir import MODEL_FILE, overlapping
from vggtransfer.serving import graph_image as gi
from vggtransfer.serving.plan import ExportError, ServingPlan, serving_plan

tf1 = tf.compat.v1

EXPORT_FILE = "export.json"
CLASSES_FILE = "classes.txt"
SIGNATURE_BYTES = "serving_default"
SIGNATURE_IMAGES = "serving_images"
EXPORT_PRECISIONS = ("fp32", "bf16")
EXPORT_FORMAT = 1


# --- the serving graph -----------------------------------------------------------------------------------------------
def _features_graph(plan: ServingPlan, conv_vars: dict, compute_dtype):
    """``features(views, sizes)`` for a padded batch: per scale (and flip), the conv stack on the padded views with
    masks, then each (end point, pooling) over the true area; flips averaged; scales concatenated (with ``mirror``,
    the photo's scales, then the mirror image's: ``BlockExtractor``'s row)."""
    from vggtransfer.nets.vgg import end_point_stride, pool, vgg_conv

    masked = plan.view == "whole"
    per_scale = 2 if plan.runs_mirrored else 1

    def pooled_blocks(x, s):
        """Each (end point, pooling) of the batch ``x``; with true sizes ``s``, over each image's true area."""
        _, end_points = vgg_conv(
            x,
            conv_vars,
            arch=plan.arch,
            final_endpoint=plan.deepest,
            frozen="given",
            sizes=s,
            compute_dtype=compute_dtype,
        )
        pooled = []
        for ep, p in plan.pools:
            net = tf.cast(end_points[ep], tf.float32)
            if s is not None:
                stride = end_point_stride(ep, plan.arch)
                if p == "avg":
                    count = tf.cast((s[:, 0] // stride) * (s[:, 1] // stride), tf.float32)
                    pooled.append(tf.reduce_sum(net, axis=[1, 2]) / count[:, None])
                else:
                    pooled.append(tf.reduce_max(net, axis=[1, 2]))
            else:
                pooled.append(pool(net, p))
        return tf.concat(pooled, axis=1)

    def features(views, sizes):
        rows, mirrored = [], []
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
            if plan.flip:
                f = (f[:n] + f[n:]) / 2.0
            elif plan.mirror:
                f, m = f[:n], f[n:]
                mirrored.append(m)
            rows.append(f)
        return tf.concat(rows + mirrored, axis=1)

    return features


def _item_views(plan: ServingPlan):
    def views(img):
        out = []
        for q in plan.scales:
            v = gi.prepare(img, q, plan.view)
            out.append(v)
            if plan.runs_mirrored:
                out.append(v[:, ::-1])
        return out

    return views


def _valid_items(items, max_pixels):
    """Indices of the encoded images that decode (tf.data runs :func:`graph_image.decodes` in parallel and drops
    an item whose decoding fails; nothing else about a bad item can fail later)."""
    n = tf.shape(items)[0]
    ds = tf.data.Dataset.from_tensor_slices((tf.range(n), items))
    ds = ds.map(lambda i, b: (i, gi.decodes(b, max_pixels)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
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
    slots = len(plan.scales) * (2 if plan.runs_mirrored else 1)
    dim = _feature_dim(plan)

    def prepare(j, arrays, shapes):
        views = views_of(decode(items[valid[j]]))
        return (
            j + 1,
            [a.write(j, v) for a, v in zip(arrays, views)],
            [s.write(j, tf.shape(v)[:2]) for s, v in zip(shapes, views)],
        )

    arrays = [tf.TensorArray(tf.uint8, size=k, infer_shape=False, element_shape=[None, None, 3]) for _ in range(slots)]
    shapes = [tf.TensorArray(tf.int32, size=k, element_shape=[2]) for _ in range(slots)]
    _, arrays, shapes = tf.while_loop(
        lambda j, *_: j < k, prepare, [tf.constant(0), arrays, shapes], parallel_iterations=8
    )
    sizes = [tf.reshape(s.stack(), [-1, 2]) for s in shapes]

    def body(start, acc):
        stop = tf.minimum(start + batch_size, k)
        batch, true = [], []
        for a, sz in zip(arrays, sizes):
            part = sz[start:stop]
            h, w = tf.reduce_max(part[:, 0]), tf.reduce_max(part[:, 1])
            padded = tf.map_fn(
                lambda j: tf.pad(a.read(j), [[0, h - tf.shape(a.read(j))[0]], [0, w - tf.shape(a.read(j))[1]], [0, 0]]),
                tf.range(start, stop),
                fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
            )
            batch.append(padded)
            true.append(part)
        return stop, acc.write(start // batch_size, features(batch, true))

    acc = tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False, element_shape=[None, dim])
    _, acc = tf.while_loop(lambda start, _: start < k, body, [tf.constant(0), acc], parallel_iterations=1)
    feats = tf.cond(k > 0, lambda: acc.concat(), lambda: tf.zeros([0, dim], tf.float32))
    return valid, tf.ensure_shape(feats, [None, dim])


def _feature_dim(plan: ServingPlan) -> int:
    from vggtransfer.features.spec import end_point_channels
    from vggtransfer.nets.vgg import feature_dim

    per_scale = 0
    for ep, p in plan.pools:
        if p == "flatten":
            per_scale += feature_dim(plan.arch, ep, p, plan.scales[0])
        else:
            per_scale += end_point_channels(plan.arch)[ep]
    return per_scale * len(plan.scales) * (2 if plan.mirror else 1)


def _outputs(plan: ServingPlan, n, indices, predictions) -> dict:
    valid = tf.scatter_nd(indices[:, None], tf.ones_like(indices, tf.bool), [n])
    if plan.task == "regression":
        value = tf.tensor_scatter_nd_update(
            tf.fill([n], np.float32(np.nan)), indices[:, None], tf.cast(predictions, tf.float32)
        )
        return {"valid": valid, "value": value}
    k = len(plan.classes)
    probs = tf.tensor_scatter_nd_update(
        tf.fill([n, k], np.float32(np.nan)), indices[:, None], tf.cast(predictions, tf.float32)
    )
    top = tf.tensor_scatter_nd_update(
        tf.fill([n], np.int64(-1)), indices[:, None], tf.argmax(predictions, axis=1, output_type=tf.int64)
    )
    names = tf.constant(list(plan.classes) + [""])
    return {
        "valid": valid,
        "probabilities": probs,
        "class_index": top,
        "class_name": tf.gather(names, tf.where(top < 0, np.int64(k), top)),
    }


def build_serving_graph(
    plan: ServingPlan, precision: str = "fp32", batch_size: int = 16, max_pixels: int | None = None
):
    """The export graph: ``(graph, {signature: (inputs, outputs)}, feeds)``; ``feeds`` initialise the weights."""
    from vggtransfer.nets.vgg import conv_variables

    if precision not in EXPORT_PRECISIONS:
        raise ExportError(f"precision must be one of {EXPORT_PRECISIONS}, got {precision!r}")
    compute_dtype = tf.bfloat16 if precision == "bf16" else None
    graph = tf.Graph()
    with graph.as_default():
        conv_vars = conv_variables(plan.conv, plan.arch, plan.deepest)
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
        raise ExportError(
            f"{given}: exists and is a folder that is not a vggtransfer export (no saved_model.pb and "
            f"assets/{EXPORT_FILE}); its files are left untouched. Choose a new --out path"
        )
    clash = overlapping(target, protect)
    if clash is not None:
        raise ExportError(f"{given}: overlaps {clash}; export outside the model folder")
    return target


def export_saved_model(
    model,
    path,
    *,
    precision: str = "fp32",
    batch_size: int = 16,
    weights_path=None,
    threads: int | None = None,
    max_pixels: int | None = None,
    protect=(),
) -> dict:
    """Export ``model`` (a loaded model of any kind, or a model directory) as a SavedModel at ``path``.

    ``max_pixels``: the decompression-bomb cap built into the graph (default: the library's, see
    :func:`vggtransfer.data.images.max_pixels_limit`); larger images are reported not valid.
    Written atomically beside ``path`` and swapped in; only a previous export is replaced. Returns a report:
    ``{path, size_bytes, conv_bytes, signatures, precision, seconds}``.
    """
    from vggtransfer.core.runtime import new_session
    from vggtransfer.data.images import max_pixels_limit
    from vggtransfer.models.registry import load_model
    from vggtransfer.nets.vgg import initialize

    t0 = time.perf_counter()
    if precision not in EXPORT_PRECISIONS:
        raise ExportError(f"precision must be one of {EXPORT_PRECISIONS}, got {precision!r}")
    if batch_size < 1:
        raise ExportError(f"batch_size must be >= 1, got {batch_size}")
    max_pixels_limit(max_pixels)  # a ValueError for a cap below 1 pixel, before the model is loaded
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
        if owned:
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
            sig_defs = {
                name: tf1.saved_model.predict_signature_def(inputs, outputs)
                for name, (inputs, outputs) in signatures.items()
            }
            builder.add_meta_graph_and_variables(
                session, [tf1.saved_model.tag_constants.SERVING], signature_def_map=sig_defs, strip_default_attrs=True
            )
            builder.save()
            session.close()
        assets = staging / "assets"
        assets.mkdir(exist_ok=True)
        conv_bytes = int(sum(w.nbytes + b.nbytes for w, b in plan.conv.values()))
        meta = {
            "format": EXPORT_FORMAT,
            "library_version": __version__,
            "kind": plan.kind,
            "task": plan.task,
            "arch": plan.arch,
            "weights_sha256": plan.config.get("weights_sha256"),
            "precision": precision,
            "batch_size": batch_size,
            "max_pixels": max_pixels_limit(max_pixels),
            "classes": list(plan.classes),
            "views": {
                "view": plan.view,
                "scales": list(plan.scales),
                "flip": plan.flip,
                "mirror": plan.mirror,
                "pools": [list(p) for p in plan.pools],
            },
            "signatures": {
                SIGNATURE_BYTES: {"inputs": {"image_bytes": "string [n]"}},
                SIGNATURE_IMAGES: {"inputs": {"images": "float32 [n, h, w, 3] in [0, 1]"}},
                "outputs": sorted(signatures[SIGNATURE_BYTES][1]),
            },
            "conv_bytes": conv_bytes,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (assets / EXPORT_FILE).write_text(json.dumps(meta, indent=2))
        (assets / MODEL_FILE).write_text(
            json.dumps({k: v for k, v in plan.config.items() if not k.startswith("_")}, indent=2, default=str)
        )
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
    return {
        "path": str(target),
        "size_bytes": _dir_size(target),
        "conv_bytes": conv_bytes,
        "signatures": {k: sorted(v[1]) for k, v in signatures.items()},
        "precision": precision,
        "seconds": time.perf_counter() - t0,
    }


__all__ = [
    "export_saved_model",
    "serving_plan",
    "build_serving_graph",
    "ServingPlan",
    "ExportError",
    "is_export_dir",
    "SIGNATURE_BYTES",
    "SIGNATURE_IMAGES",
    "EXPORT_PRECISIONS",
]
