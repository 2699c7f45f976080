"""Richer frozen features in one pass: several named blocks (global average and max of pool3, pool4, pool5) at one or
more scales of the whole image, optionally averaged with the horizontal flip (``flip``) or with the mirror image's
blocks kept after the photo's (``mirror``: a model trains on both and averages its predictions).

A :class:`FeatureSpec` says what to compute; a :class:`BlockExtractor` computes it. The graph takes images of any
size >= 32 px (``[None, None, None, 3]``); views of similar photos have the same shape because whole-image views
round their long side to a multiple of 32 (see :func:`vggtransfer.data.images.view_geometry`), and the extractor batches
views of equal shape together (buckets), so photos of mixed sizes and orientations still run in full batches.

Every view goes through :func:`vggtransfer.data.images.prepare`, the one preprocessing path, whether the item is a file
or an in-memory array, for training, for a store or for prediction: the same file always gives the same feature.

Layout of a feature row: for each scale, for each end point, for each pooling, one block of that end point's
channels (``pool5.avg@256`` ...). :attr:`BlockExtractor.blocks` lists ``(name, start, stop)``. With ``mirror`` the
row holds that layout twice: the photo's, then its mirror image's (``FeatureSpec.mirror_blocks``).
"""

from __future__ import annotations

import concurrent.futures as cf

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
from vggtransfer.data.images import ImageError, array_views, check_array_images, load_views
from vggtransfer.features.extractor import conv_sha256
from vggtransfer.features.spec import PREPROCESSING, FeatureSpec, block_name, normalise_blocks, parse_block_name  # noqa: F401
from vggtransfer.nets.cfg import get_cfg
from vggtransfer.nets.vgg import initialize, vgg_conv
from vggtransfer.weights.npy import load_conv_weights, weights_architecture

tf1 = tf.compat.v1


class BlockExtractor(Closing):
    """Frozen VGG conv stack + global pooling of several end points, for images of any size.

    Same interface as :class:`vggtransfer.features.extractor.FeatureExtractor` (``config``, ``dim``, ``extract_paths``,
    ``iter_paths``), plus :meth:`extract_images` for in-memory uint8 images of any size and :attr:`blocks`.
    ``precision='auto'`` runs bf16 where the CPU has native bf16, fp32 elsewhere.
    """

    def __init__(
        self,
        weights,
        spec: FeatureSpec | None = None,
        arch: str | None = None,
        batch_size: int | None = None,
        precision: str = "auto",
        threads: int | None = None,
    ):
        spec = spec or FeatureSpec()
        if arch is None:
            arch = weights_architecture(weights)  # a file's header only
        get_cfg(arch)
        spec.check(arch)
        deepest = spec.deepest(arch)
        arch, weights, layers = load_conv_weights(weights, arch, deepest)
        self.arch, self.spec = arch, spec
        self.precision = resolve_precision(precision)
        # Whole views of a 4:3 photo hold ~1.3x the pixels of the square: batches sized for that.
        self.batch_size = batch_size or default_batch_size(
            int(max(spec.scales) * (1.15 if spec.view == "whole" else 1))
        )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.blocks = spec.blocks(arch)
        self.dim = spec.dim(arch)
        self.per_scale = self.blocks[-1][2] // len(spec.scales)
        if spec.view == "crop" and len(self.blocks) == 1 and not spec.runs_mirrored:
            # One block of the square crop is exactly the classic FeatureExtractor's feature (the same prepare(),
            # conv stack and pooling): the classic config, so classic stores and these models go together.
            from vggtransfer.features.extractor import PREPROCESSING as CLASSIC

            layout = {
                "end_point": spec.end_points[0],
                "pooling": spec.poolings[0],
                "image_size": spec.scales[0],
                "preprocessing": CLASSIC,
            }
        else:
            layout = {
                "features": spec.to_dict(),
                "blocks": [[n, a, b] for n, a, b in self.blocks],
                "preprocessing": PREPROCESSING,
            }
        self.config = {
            "arch": arch,
            "weights_sha256": conv_sha256(weights, layers),
            **layout,
            "precision": self.precision,
            "library_version": __version__,
        }
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.images = tf1.placeholder(tf.float32, [None, None, None, 3], name="images")
            _, end_points = vgg_conv(self.images, weights, arch=arch, final_endpoint=deepest)
            pooled = []
            for ep in spec.end_points:
                for p in spec.poolings:
                    reduce = tf.reduce_mean if p == "avg" else tf.reduce_max
                    pooled.append(reduce(end_points[ep], axis=[1, 2]))
            self.features = tf.concat(pooled, axis=1, name="features")
            self.session = new_session(self.graph, self.precision, threads)
            initialize(self.session)
            self.graph.finalize()

    # --- views -------------------------------------------------------------------------------------------------
    def views_of_file(self, path) -> list:
        """The prepared views (one per scale) of an image file, decoded once; raises :class:`ImageError` naming it."""
        return load_views(path, self.spec.scales, self.spec.view)

    def views_of_array(self, array) -> list:
        """The prepared views of an in-memory uint8 RGB image (h, w, 3), by the same path as files."""
        return array_views(array, self.spec.scales, self.spec.view)

    # --- the batched run ----------------------------------------------------------------------------------------
    def iter_views(self, items, load, workers: int | None = None, window: int | None = None):
        """Yield ``(features (b, dim), indices, errors)`` as items complete. ``load(item)`` returns an item's views
        or raises :class:`ImageError`; loading runs in threads, a window ahead of the conv compute."""
        items = list(items)
        n = len(items)
        workers = workers or max(2, cpu_count())
        window = window or self.batch_size * 4
        both = self.spec.runs_mirrored
        n_slots = len(self.spec.scales) * (2 if both else 1)
        buckets: dict = {}
        acc: dict = {}
        left: dict = {}

        def do_load(i):
            try:
                return i, load(items[i]), None
            except ImageError as exc:
                return i, None, exc

        def run_bucket(entries):
            x = np.stack([e[2] for e in entries])
            out = self.session.run(self.features, {self.images: x})
            done = []
            for (i, slot, _), f in zip(entries, out):
                acc[i][slot] = f
                left[i] -= 1
                if left[i] == 0:
                    done.append(i)
            return done

        def finish(done):
            rows = []
            for i in done:
                a = acc.pop(i)
                del left[i]
                if self.spec.flip:
                    a = a.reshape(len(self.spec.scales), 2, -1).mean(axis=1)
                elif self.spec.mirror:  # the photo's blocks at every scale, then the mirror image's
                    a = a.reshape(len(self.spec.scales), 2, -1).transpose(1, 0, 2)
                rows.append(a.reshape(-1))
            return np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.dim), np.float32)

        with cf.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="vggtransfer-decode", initializer=lower_priority_of_this_thread
        ) as pool_:
            starts = list(range(0, n, window))
            futures = [pool_.submit(do_load, i) for i in range(min(n, window))]
            for k, s in enumerate(starts):
                current = futures
                nxt = starts[k + 1] if k + 1 < len(starts) else None
                futures = (
                    [pool_.submit(do_load, i) for i in range(nxt, min(n, nxt + window))] if nxt is not None else []
                )
                errors, done = [], []
                for fut in current:
                    i, views, err = fut.result()
                    if err is not None:
                        errors.append(err)
                        continue
                    acc[i] = np.zeros((n_slots, self.per_scale), np.float32)
                    left[i] = n_slots
                    for q, v in enumerate(views):
                        slots = [(q * 2, v), (q * 2 + 1, v[:, ::-1])] if both else [(q, v)]
                        for slot, arr in slots:
                            buckets.setdefault(arr.shape, []).append((i, slot, arr))
                final = nxt is None
                for shape in list(buckets):
                    entries = buckets[shape]
                    while len(entries) >= self.batch_size or (final and entries):
                        batch, entries = entries[: self.batch_size], entries[self.batch_size :]
                        done.extend(run_bucket(batch))
                    if entries:
                        buckets[shape] = entries
                    else:
                        del buckets[shape]
                done.sort()
                yield finish(done), done, errors

    def iter_paths(self, paths, workers: int | None = None):
        """Yield ``(features, indices, errors)`` as the image files complete (indices into ``paths``)."""
        return self.iter_views([str(p) for p in paths], self.views_of_file, workers)

    def extract_paths(self, paths, progress: bool | None = None, desc: str = "extract features"):
        """Features of image files: ``(features (n_ok, dim), ok_indices, errors)`` in the order of ``paths``."""
        return self._collect(self.iter_paths(paths), len(paths), progress, desc)

    def extract_images(self, arrays, progress: bool | None = None, desc: str = "extract features"):
        """Features of in-memory uint8 RGB images (any sizes): ``(features (n, dim), indices, errors)``."""
        arrays = check_array_images(arrays)

        def load(i):
            return self.views_of_array(arrays[i])

        return self._collect(self.iter_views(range(len(arrays)), load), len(arrays), progress, desc)

    def _collect(self, it, n, progress, desc):
        feats = np.zeros((n, self.dim), np.float32)
        ok, errors = [], []
        with progress_bar(total=n, desc=desc, unit="img", progress=progress, leave=False) as bar:
            for f, idx, errs in it:
                feats[idx] = f
                ok.extend(idx)
                errors.extend(errs)
                bar.update(len(idx) + len(errs))
        ok.sort()
        return feats[ok], ok, errors


__all__ = ["FeatureSpec", "BlockExtractor", "block_name", "parse_block_name", "normalise_blocks", "PREPROCESSING"]
