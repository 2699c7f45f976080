"""VGG16 / VGG19 conv stacks as TF1 graph builders, tf-slim style: ``net, end_points = vgg16(images, weights)``.

The one conv builder of the library: feature extraction, the auto recipe's blocks, fine-tuning's trainable top and
the serving export all build their convolutions with :func:`vgg_conv`; the layer table is
:mod:`vggtransfer.nets.cfg`.

Input: RGB float images in [0, 1], NHWC, any size >= 32 x 32. Preprocessing happens inside the graph (x255,
RGB->BGR, subtract the VGG mean), so callers never repeat it. ``end_points`` maps every layer name (conv1_1 ...
conv5_3, pool1 ... pool5) to its tensor.

Frozen layers are non-trainable variables initialised once from placeholders (``frozen='variable'``, the default)
or ``tf.constant`` (``frozen='constant'``). Both keep the weights out of every checkpoint (savers here are built on
head variables only); the variable form keeps the 59 MB of weights out of the GraphDef, which halves peak memory
(measured in bench/bench_memory.py, figures in BENCHMARKS.md). The numpy arrays waiting to be fed are kept in a
collection of the graph they belong to; after building, call :func:`initialize` once per session: it runs the
initialisers with the weights fed, then empties that collection.
"""

from __future__ import annotations

import numpy as np

from vggtransfer.core.tf import tf
from vggtransfer.nets.cfg import (  # noqa: F401 (re-exported)
    ARCHITECTURES,
    MIN_INPUT_SIDE,
    POOLINGS,
    VGG_MEAN_BGR,
    conv_blocks,
    conv_layer_names,
    end_point_channels,
    end_point_names,
    end_point_stride,
    get_cfg,
)

tf1 = tf.compat.v1

_FROZEN_MODES = ("variable", "constant", "given")

#: Graph collection of the conv variables (weights and biases) the builder creates.
CONV_VARIABLES = "vggtransfer_conv_variables"
#: Graph collection of ``(placeholder, numpy array)`` pairs still to be fed into the conv variables' initialisers.
_WEIGHT_FEEDS = "vggtransfer_weight_feeds"


def preprocess(images: tf.Tensor) -> tf.Tensor:
    """RGB in [0, 1] -> BGR in 0..255 minus the VGG mean (the Caffe convention all VGG weight files use)."""
    bgr = tf.reverse(images * 255.0, axis=[-1])
    return bgr - tf.constant(VGG_MEAN_BGR, dtype=images.dtype)


def _check_inputs(images: tf.Tensor, channels: int = 3, reduction: int = 1) -> None:
    shape = images.shape
    if shape.rank != 4 or (shape[-1] is not None and shape[-1] != channels):
        what = "3 channels (RGB in [0, 1])" if channels == 3 else f"{channels} channels"
        raise ValueError(f"inputs must be NHWC with {what}; got shape {shape}")
    if reduction != 1:
        return
    for side in (shape[1], shape[2]):
        if side is not None and side < MIN_INPUT_SIDE:
            raise ValueError(
                f"images must be at least {MIN_INPUT_SIDE}x{MIN_INPUT_SIDE} (five 2x2 poolings); "
                f"got {shape[1]}x{shape[2]}"
            )


def _param(name: str, value: np.ndarray, trainable: bool, frozen: str) -> tf.Tensor:
    if frozen == "given":  # the weights are tensors already (e.g. variables shared by several graph functions)
        return value
    if frozen == "constant" and not trainable:
        return tf.constant(value, name=name)
    placeholder = tf1.placeholder(tf.float32, shape=value.shape, name=f"{name}_init")
    var = tf1.Variable(
        placeholder,
        trainable=trainable,
        name=name,  # TF adds trainable ones to TRAINABLE_VARIABLES
        collections=[tf1.GraphKeys.GLOBAL_VARIABLES, CONV_VARIABLES],
    )
    tf1.add_to_collection(_WEIGHT_FEEDS, (placeholder, value))
    return var


def valid_mask(net: tf.Tensor, sizes: tf.Tensor, stride: int) -> tf.Tensor:
    """(n, H, W, 1) float mask of the pixels of ``net`` that lie inside each image's true ``sizes`` (n, 2: height,
    width at the input) at ``stride`` (VALID 2x2 poolings floor: a true size h has h // stride rows there)."""
    shape = tf.shape(net)
    rows = tf.range(shape[1])[None, :] < (sizes[:, 0] // stride)[:, None]
    cols = tf.range(shape[2])[None, :] < (sizes[:, 1] // stride)[:, None]
    mask = tf.logical_and(rows[:, :, None], cols[:, None, :])
    return tf.cast(mask, net.dtype)[..., None]


def vgg_conv(
    images: tf.Tensor,
    weights: dict,
    arch: str = "vgg16",
    final_endpoint: str = "pool5",
    trainable_from: str | None = None,
    frozen: str = "variable",
    scope: str | None = None,
    sizes: tf.Tensor | None = None,
    compute_dtype=None,
    start_from: str | None = None,
):
    """Build the conv stack of ``arch`` on ``images`` up to ``final_endpoint``; return ``(net, end_points)``.

    ``weights`` is ``{layer: (W HWIO, b)}`` (see :func:`vggtransfer.weights.npy.load_weights`); only the layers up to
    ``final_endpoint`` are used. Layers from ``trainable_from`` (e.g. 'conv5_1') onward become trainable variables
    initialised from the weights (fine-tuning); the others stay frozen. ``frozen``: 'variable' (non-trainable
    variables fed once, see :func:`initialize`), 'constant', or 'given' (``weights`` already holds tensors).

    ``start_from`` (a conv layer): build only the layers from it on; ``images`` is then the map of the end point
    before it (e.g. pool4's maps for 'conv5_1'), not an image batch. Fine-tuning builds its trainable top this way.

    ``sizes`` (int32 (n, 2), optional): the true height and width of each image of a zero-padded batch. Every map
    is then zeroed outside the true area after each layer, so each image's maps inside it equal those of the image
    run alone (SAME padding sees zeros, 2x2 pools floor the same way) when the true sizes are the padded
    batch's top-left corner. ``compute_dtype`` (e.g. ``tf.bfloat16``): run the convolutions in that type (the
    weights stay float32 variables and are cast).
    """
    cfg = get_cfg(arch)
    names = cfg.end_points
    final = cfg.layer(final_endpoint)
    if frozen not in _FROZEN_MODES:
        raise ValueError(f"frozen must be one of {_FROZEN_MODES}, got {frozen!r}")
    conv_names = cfg.conv_layers
    for option, value in (("trainable_from", trainable_from), ("start_from", start_from)):
        if value is not None and value not in conv_names:
            raise ValueError(f"{option} must be a conv layer of {arch} ({', '.join(conv_names)}), got {value!r}")
    first = names.index(start_from) if start_from else 0
    if names.index(final.name) < first:
        raise ValueError(f"final_endpoint {final.name!r} comes before start_from {start_from!r}")
    needed = [n for n in conv_names if first <= names.index(n) <= names.index(final.name)]
    missing = [n for n in needed if n not in weights]
    if missing:
        raise ValueError(f"weights lack layers {', '.join(missing)} needed up to {final_endpoint}")
    start = cfg.layer(start_from or "conv1_1")
    _check_inputs(images, start.in_channels, start.reduction)
    first_trainable = names.index(trainable_from) if trainable_from else len(names)

    def masked(x, stride):
        return x if sizes is None else x * valid_mask(x, sizes, stride)

    end_points = {}
    with tf1.variable_scope(scope, default_name=arch, values=[images]):
        net = images if start_from else masked(preprocess(images), 1)
        if compute_dtype is not None:
            net = tf.cast(net, compute_dtype)
        for layer in cfg.layers[first : names.index(final.name) + 1]:
            if layer.kind == "conv":
                w, bias = weights[layer.name]
                trainable = names.index(layer.name) >= first_trainable
                with tf1.variable_scope(layer.name):
                    kernel = _param("weights", w, trainable, frozen)
                    biases = _param("biases", bias, trainable, frozen)
                    if compute_dtype is not None:
                        kernel, biases = tf.cast(kernel, compute_dtype), tf.cast(biases, compute_dtype)
                    net = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(net, kernel, 1, "SAME"), biases), name="relu")
            else:
                net = tf.nn.max_pool2d(net, 2, 2, "VALID", name=layer.name)
            net = masked(net, layer.reduction)
            end_points[layer.name] = net
    return net, end_points


def conv_variables(weights: dict, arch: str = "vgg16", final_endpoint: str = "pool5", scope: str | None = None) -> dict:
    """Frozen conv variables ``{layer: (kernel, biases)}`` for the layers up to ``final_endpoint``, to share between
    several stacks built with ``vgg_conv(..., weights=<this>, frozen='given')`` (the serving export builds one per
    scale and flip). Fed by :func:`initialize` like the builder's own."""
    cfg = get_cfg(arch)
    last = cfg.end_points.index(cfg.layer(final_endpoint).name)
    out = {}
    with tf1.variable_scope(scope, default_name=arch):
        for name in cfg.conv_layers:
            if cfg.end_points.index(name) > last:
                break
            w, b = weights[name]
            with tf1.variable_scope(name):
                out[name] = (_param("weights", w, False, "variable"), _param("biases", b, False, "variable"))
    return out


def vgg16(images, weights, **kwargs):
    """VGG16 conv stack; see :func:`vgg_conv`."""
    return vgg_conv(images, weights, arch="vgg16", **kwargs)


def vgg19(images, weights, **kwargs):
    """VGG19 conv stack; see :func:`vgg_conv`."""
    return vgg_conv(images, weights, arch="vgg19", **kwargs)


def weight_feeds(graph: tf.Graph | None = None) -> dict:
    """The placeholder -> numpy feeds the conv variables' initialisers still need in ``graph``."""
    graph = graph or tf1.get_default_graph()
    return dict(graph.get_collection(_WEIGHT_FEEDS))


def initialize(sess, var_list=None, release: bool = True) -> None:
    """Initialise ``var_list`` (default: all global variables of the session's graph), feeding the VGG weights.

    With ``release`` the numpy copies of the weights are dropped afterwards (they live on in the variables).
    """
    graph = sess.graph
    with graph.as_default():
        variables = var_list if var_list is not None else tf1.global_variables()
        init = tf1.variables_initializer(variables)
    sess.run(init, feed_dict=weight_feeds(graph))
    if release and not graph.finalized:
        graph.clear_collection(_WEIGHT_FEEDS)


def pool(net: tf.Tensor, pooling: str) -> tf.Tensor:
    """Turn an NHWC feature map into a vector per image: 'flatten', 'max' (global max) or 'avg' (global average)."""
    if pooling == "flatten":
        dims = net.shape[1:]
        if not dims.is_fully_defined():
            raise ValueError(f"pooling='flatten' needs a fixed input size; feature map shape is {net.shape}")
        return tf.reshape(net, [-1, int(np.prod(dims))])
    if pooling == "max":
        return tf.reduce_max(net, axis=[1, 2])
    if pooling == "avg":
        return tf.reduce_mean(net, axis=[1, 2])
    raise ValueError(f"pooling must be 'flatten', 'max' or 'avg', got {pooling!r}")


def feature_dim(arch: str, end_point: str, pooling: str, image_size: int) -> int:
    """Length of the feature vector for an end point, pooling and square input size."""
    layer = get_cfg(arch).layer(end_point)
    if pooling != "flatten":
        return layer.channels
    side = get_cfg(arch).output_side(end_point, image_size)
    return side * side * layer.channels
