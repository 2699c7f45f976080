"""Batched feature extraction from image files: decoding overlapped with the conv compute.

:func:`image_batches` decodes and resizes images in a thread pool (Pillow releases the GIL while decoding) and
keeps a few batches ready while the session computes the previous one, so extraction from files runs close to
the speed of extraction from arrays in memory. Bad files are skipped and reported, never fatal.

:class:`FeatureExtractor` is a frozen conv stack + pooling in its own graph and session; its :attr:`config`
identifies exactly what produced a feature (weights, end point, pooling, input size, preprocessing, version).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import warnings
from collections import deque

import numpy as np

from vggtransfer import __version__
from vggtransfer.core.progress import bar as progress_bar
from vggtransfer.core.runtime import (
    Closing,
    cpu_count,
    default_batch_size,
    lower_priority_of_this_thread,
    new_session,
    resolve_precision,
)
from vggtransfer.core.tf import tf
from vggtransfer.data.images import ImageError, load_image, path_list
from vggtransfer.nets.cfg import MIN_INPUT_SIDE, get_cfg, layers_needed  # noqa: F401 (layers_needed re-exported)
from vggtransfer.nets.vgg import POOLINGS, feature_dim, initialize, pool, vgg_conv
from vggtransfer.weights.npy import load_conv_weights

tf1 = tf.compat.v1

PREPROCESSING = (
    "RGB [0,1] -> centre crop (short side) -> bilinear resize -> x255, RGB->BGR, minus [103.939,116.779,123.68]"
)


def image_batches(paths, size: int = 224, batch_size: int = 16, workers: int | None = None, prefetch: int = 2):
    """Yield ``(images (b, size, size, 3) float32, indices into paths, [ImageError, ...])`` per batch, in order.

    Decoding runs in ``workers`` threads (at a lower priority than the compute threads), ``prefetch`` batches
    ahead of the consumer.
    """
    paths = list(paths)
    workers = workers or max(2, cpu_count())
    chunks = [range(s, min(s + batch_size, len(paths))) for s in range(0, len(paths), batch_size)]

    def load(i):
        try:
            return i, load_image(paths[i], size), None
        except ImageError as exc:
            return i, None, exc

    with cf.ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="vggtransfer-decode", initializer=lower_priority_of_this_thread
    ) as pool_:
        pending: deque = deque()
        chunk_iter = iter(chunks)

        def submit_next():
            chunk = next(chunk_iter, None)
            if chunk is not None:
                pending.append([pool_.submit(load, i) for i in chunk])

        for _ in range(prefetch + 1):
            submit_next()
        while pending:
            futures = pending.popleft()
            submit_next()
            results = [f.result() for f in futures]
            arrays = [a for _, a, _ in results if a is not None]
            indices = [i for i, a, _ in results if a is not None]
            errors = [e for _, _, e in results if e is not None]
            batch = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.float32)
            yield batch, indices, errors


def predict_paths(image_paths, batches, output_shape, predict, errors: str = "report"):
    """The prediction loop every model shares: ``(out, bad)`` for image path(s), in their order.

    ``batches(paths)`` yields ``(inputs, indices, errors)`` (see :func:`image_batches`); ``predict(inputs)`` returns
    one row per input; ``output_shape(n)`` is the shape of ``out``, which holds NaN where an image could not be read.
    A single path that cannot be read raises its :class:`ImageError`; for a list, ``errors='report'`` predicts the
    others and warns naming the bad ones, ``errors='raise'`` raises on the first.
    """
    if errors not in ("report", "raise"):
        raise ValueError(f"errors must be 'report' or 'raise', got {errors!r}")
    paths, single = path_list(image_paths)
    out = np.full(output_shape(len(paths)), np.nan)
    bad = []
    for inputs, indices, errs in batches(paths):
        if errs and (single or errors == "raise"):
            raise errs[0]
        bad.extend(errs)
        if len(indices):
            out[indices] = predict(inputs)
    if bad:
        warnings.warn(
            f"{len(bad)} of {len(paths)} images could not be read and were predicted as NaN: "
            + "; ".join(str(e) for e in bad[:10]),
            RuntimeWarning,
            stacklevel=3,
        )
    return out, bad


def conv_sha256(weights: dict, layers) -> str:
    """A fingerprint of the conv weights a graph uses (independent of the file they came from)."""
    h = hashlib.sha256()
    for name in layers:
        for arr in weights[name]:
            h.update(name.encode())
            h.update(np.ascontiguousarray(arr, np.float32).tobytes())
    return h.hexdigest()


class FeatureExtractor(Closing):
    """Frozen VGG conv stack up to ``end_point``, pooled to one vector per image.

    ``batch_size`` (default: :func:`vggtransfer.core.runtime.default_batch_size`, 16 at 224 px, 128 at 64 px),
    ``threads`` (default: all cores) and ``precision`` ('fp32' or 'bf16'; bf16 falls back to fp32 with a warning
    where the CPU lacks it) are the speed settings.

    >>> fx = FeatureExtractor("vgg16.npy", end_point="pool5", pooling="max", image_size=224)
    >>> feats, ok, errors = fx.extract_paths(["a.jpg", "b.png"])
    """

    def __init__(
        self,
        weights,
        arch: str | None = None,
        end_point: str = "pool5",
        pooling: str = "flatten",
        image_size: int = 224,
        batch_size: int | None = None,
        precision: str = "auto",
        threads: int | None = None,
        weights_path: str | None = None,
        extend=None,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if image_size < MIN_INPUT_SIDE:
            raise ValueError(f"image_size must be at least {MIN_INPUT_SIDE}, got {image_size}")
        if batch_size is None:
            batch_size = default_batch_size(image_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if arch is not None:
            get_cfg(arch).layer(end_point)  # ValueErrors naming the architectures or end points
        arch, weights, layers = load_conv_weights(weights, arch, end_point)
        self.arch, self.end_point, self.pooling, self.image_size = arch, end_point, pooling, image_size
        self.batch_size = batch_size
        self.precision = resolve_precision(precision)
        self.config = {
            "arch": arch,
            "weights_sha256": conv_sha256(weights, layers),
            "end_point": end_point,
            "pooling": pooling,
            "image_size": image_size,
            "preprocessing": PREPROCESSING,
            "precision": self.precision,  # bf16 features differ from fp32 ones (~1 %): a store keeps them apart
            "library_version": __version__,
        }
        self.dim = feature_dim(arch, end_point, pooling, image_size)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.images = tf1.placeholder(tf.float32, [None, image_size, image_size, 3], name="images")
            net, self.end_points = vgg_conv(self.images, weights, arch=arch, final_endpoint=end_point)
            self.features = pool(net, pooling)
            self.extension = extend(self.features) if extend is not None else None
            self.session = new_session(self.graph, self.precision, threads)
            initialize(self.session)
            self.graph.finalize()

    def extract_arrays(self, images: np.ndarray) -> np.ndarray:
        """Features of RGB float images in [0, 1], shape (n, image_size, image_size, 3)."""
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"images must have shape (n, {self.image_size}, {self.image_size}, 3), got {images.shape}")
        out = [
            self.session.run(self.features, {self.images: images[s : s + self.batch_size]})
            for s in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def iter_paths(self, paths, workers: int | None = None):
        """Yield ``(features, indices, errors)`` per batch of ``paths``, decoding overlapped with compute."""
        for batch, indices, errors in image_batches(paths, self.image_size, self.batch_size, workers):
            feats = (
                self.session.run(self.features, {self.images: batch})
                if len(batch)
                else np.zeros((0, self.dim), np.float32)
            )
            yield feats, indices, errors

    def extract_paths(self, paths, progress: bool | None = None, desc: str = "extract features"):
        """Features of image files. Returns ``(features (n_ok, dim), ok_indices, errors)``; bad files are skipped."""
        paths = list(paths)
        feats, ok, errors = [], [], []
        with progress_bar(total=len(paths), desc=desc, unit="img", progress=progress, leave=False) as bar:
            for f, idx, errs in self.iter_paths(paths):
                feats.append(f)
                ok.extend(idx)
                errors.extend(errs)
                bar.update(len(idx) + len(errs))
        features = np.concatenate(feats) if feats else np.zeros((0, self.dim), np.float32)
        return features, ok, errors
