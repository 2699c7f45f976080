"""Fine-tuning: the conv layers from ``trainable_from`` (e.g. conv5_1) onward become trainable, the rest stay frozen.

CPU design. The frozen prefix (everything before ``trainable_from``: pool4 for conv5_1) never changes, so it is
computed once per training view and cached: each training image gives ``views`` augmented views (random resized
crop, horizontal flip, small colour jitter; done in the seeded input pipeline on the decoded image), validation
images their un-augmented centre view. Training then runs only the trainable conv layers + head on the cached
prefix maps, the backbone with a lower learning rate (Adam, ``backbone_learning_rate``) than the head. Early
stopping on validation loss keeps the best weights.

The graph is ``images -> frozen prefix`` and ``[prefix placeholder] -> trainable convs -> pooling -> head``:
prediction runs the first stage on images and feeds its output to the second; training feeds the cached maps. The checkpoint holds only the
trainable conv variables and the head (``head.ckpt``); ``vggtransfer.json`` records ``trainable_from``, the input
size, pooling and the weights fingerprint. ``FineTunedClassifier(restore_from=DIR)`` rebuilds the same graph
(frozen prefix from the weights file, fine-tuned layers from the checkpoint); ``predict`` works as for a frozen
model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from vggtransfer import __version__
from vggtransfer.core.progress import bar as progress_bar
from vggtransfer.core.runtime import new_session
from vggtransfer.core.tf import tf
from vggtransfer.data.datasets import Dataset
from vggtransfer.data.images import ImageError, _open, prepare, to_rgb
from vggtransfer.data.splits import resolve_class_weights, split_indices
from vggtransfer.features.extractor import PREPROCESSING, conv_sha256, image_batches, predict_paths
from vggtransfer.models import defaults
from vggtransfer.models.base import Model
from vggtransfer.models.classifier_api import ClassifierAPI
from vggtransfer.models.heads import HeadGraph, HeadSpec, TrainReport
from vggtransfer.models.modeldir import (
    CHECKPOINT,
    FORMAT_VERSION,
    MODEL_FILE,
    ModelError,
    read_model_config,
    restore_checkpoint,
    write_model_dir,
)
from vggtransfer.nets.cfg import conv_layer_names
from vggtransfer.nets.vgg import end_point_names, initialize, pool, vgg_conv
from vggtransfer.weights.npy import load_weights
from vggtransfer.weights.sources import resolve_weights

tf1 = tf.compat.v1
FT = defaults.FINETUNE


# --- augmentation (input pipeline) ------------------------------------------------------------------------------
def decode(item, array=None) -> Image.Image:
    """An item as an RGB PIL image (from its file, or its in-memory uint8 array)."""
    if array is not None:
        return Image.fromarray(np.asarray(array, np.uint8), "RGB")
    img = _open(Path(item), str(item))
    try:
        return to_rgb(ImageOps.exif_transpose(img))
    except (OSError, ValueError) as exc:
        raise ImageError(item, f"could not convert image ({exc})") from None


def centre_view(img: Image.Image, size: int) -> np.ndarray:
    """The centre square of a PIL image resized to ``size``, float32 in [0, 1]: the prediction view
    (:func:`vggtransfer.data.images.prepare`, the one preprocessing path)."""
    return prepare(img, size)


def augmented_view(
    img: Image.Image,
    size: int,
    rng: np.random.Generator,
    scale=(0.35, 1.0),
    ratio=(3 / 4, 4 / 3),
    flip: bool = True,
    jitter: float = 0.1,
) -> np.ndarray:
    """Random resized crop (area ``scale`` of the image, aspect ``ratio``), horizontal flip, colour jitter
    (brightness, contrast, saturation each x[1-jitter, 1+jitter]); float32 (size, size, 3) in [0, 1]."""
    w, h = img.size
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        cw, ch = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            break
    else:
        cw = ch = min(w, h)
        left, top = (w - cw) // 2, (h - ch) // 2
    out = img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
    if flip and rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if jitter > 0:
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            out = enhancer(out).enhance(float(rng.uniform(1 - jitter, 1 + jitter)))
    return np.asarray(out, np.float32) / 255.0


def prefix_end_point(arch: str, trainable_from: str) -> str:
    """The end point just before ``trainable_from`` (conv5_1 -> pool4): the output of the frozen prefix."""
    names = end_point_names(arch)
    if trainable_from not in conv_layer_names(arch):
        raise ValueError(
            f"trainable_from must be a conv layer of {arch} ({', '.join(conv_layer_names(arch))}), "
            f"got {trainable_from!r}"
        )
    i = names.index(trainable_from)
    if i == 0:
        raise ValueError("trainable_from=conv1_1 leaves no frozen prefix; fine-tune from a later layer")
    return names[i - 1]


class FineTunedClassifier(ClassifierAPI, Model):
    """VGG with conv layers from ``trainable_from`` onward fine-tuned, + a softmax head; same predict API."""

    kind = "finetuned"

    def __init__(
        self,
        weights_path=None,
        restore_from=None,
        *,
        classes=(),
        arch: str = "vgg16",
        trainable_from: str = FT.trainable_from,
        image_size: int = defaults.IMAGE_SIZE,
        pooling: str = FT.pooling,
        hidden=FT.hidden,
        dropout: float = FT.dropout,
        l2: float = FT.l2,
        learning_rate: float = FT.learning_rate,
        backbone_learning_rate: float = FT.backbone_learning_rate,
        batch_size: int = FT.batch_size,
        threads: int | None = None,
    ):
        self.restored_from = None
        defaults.check_number("learning_rate", learning_rate, 0)
        defaults.check_number("backbone_learning_rate", backbone_learning_rate, 0, inclusive=True)
        defaults.check_number("batch_size", batch_size, 1, inclusive=True, integer=True)
        cfg = None
        if restore_from is not None:
            cfg = read_model_config(restore_from, kinds=(self.kind,))
            arch, trainable_from = cfg["arch"], cfg["trainable_from"]
            image_size, pooling = cfg["image_size"], cfg["pooling"]
            spec = HeadSpec.from_dict(cfg["head"])
            learning_rate = cfg.get("learning_rate", learning_rate)
            backbone_learning_rate = cfg.get("backbone_learning_rate", backbone_learning_rate)
            self.restored_from = cfg["_dir"]
        else:
            spec = HeadSpec(
                task="classification",
                hidden=tuple(hidden) if not isinstance(hidden, int) else (hidden,),
                dropout=dropout,
                l2=l2,
                classes=tuple(classes),
            )
        self.spec, self.arch, self.trainable_from = spec, arch, trainable_from
        self.image_size, self.pooling, self.batch_size = image_size, pooling, batch_size
        self.learning_rate, self.backbone_learning_rate = learning_rate, backbone_learning_rate
        self.prefix_end = prefix_end_point(arch, trainable_from)
        self.weights_path = resolve_weights(weights_path, arch=arch)
        layers = conv_layer_names(arch)
        weights = load_weights(self.weights_path, layers=layers, arch=arch)
        self.config = {
            "arch": arch,
            "weights_sha256": conv_sha256(weights, layers),
            "end_point": "pool5",
            "pooling": pooling,
            "image_size": image_size,
            "preprocessing": PREPROCESSING,
            "library_version": __version__,
            "trainable_from": trainable_from,
        }
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.images = tf1.placeholder(tf.float32, [None, image_size, image_size, 3], name="images")
            self.frozen, _ = vgg_conv(self.images, weights, arch=arch, final_endpoint=self.prefix_end)
            # Two stages joined by a placeholder: the frozen prefix is computed (and for training cached) first.
            self.prefix = tf1.placeholder(tf.float32, self.frozen.shape, name="prefix")
            top, _ = vgg_conv(
                self.prefix,
                weights,
                arch=arch,
                start_from=trainable_from,
                trainable_from=trainable_from,
                scope="finetune",
            )
            self.backbone_variables = tf1.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES, scope="finetune/")
            self.feature_scale = tf1.Variable(1.0, trainable=False, name="feature_scale")
            self._scale_in = tf1.placeholder(tf.float32, [])
            self._set_feature_scale = self.feature_scale.assign(self._scale_in)
            self.pooled = pool(top, pooling)
            self.head = HeadGraph(
                self.pooled * self.feature_scale,
                spec,
                learning_rate=learning_rate,
                backbone_variables=self.backbone_variables,
                backbone_learning_rate=backbone_learning_rate,
            )
            # Training and evaluation feed the cached prefix maps (see HeadGraph.fit / evaluate).
            self.head.features = self.prefix
            self.session = new_session(self.graph, "fp32", threads)
            initialize(self.session)
            self.graph.finalize()
        del weights
        self.last_errors: list = []
        if cfg is not None:
            if cfg["weights_sha256"] != self.config["weights_sha256"]:
                raise ModelError(
                    f"{restore_from}: the model was fine-tuned from other VGG weights than "
                    f"{self.weights_path}; pass the weights file it was trained with"
                )
            with self.graph.as_default():
                restore_checkpoint(self.head.saver, self.session, self.restored_from)
            self.session.run(self._set_feature_scale, {self._scale_in: cfg["feature_scale"]})

    def check_store(self, store, name: str = "feature store") -> None:
        """Always refused: a fine-tuned model runs its tuned conv layers on images, not on stored frozen features."""
        raise ValueError(
            f"{name}: a fine-tuned model predicts from images (its top conv layers were tuned), not from "
            "a feature store of frozen features"
        )

    @classmethod
    def load(cls, model_dir, weights_path=None, precision: str = "auto", **runtime) -> "FineTunedClassifier":
        """Restore a fine-tuned model; it predicts in fp32 (its tuned layers were trained and saved in fp32)."""
        if precision not in ("fp32", "auto"):
            raise ValueError(
                f"{model_dir}: a fine-tuned model predicts in fp32 only (precision={precision!r} is for "
                "models on frozen features)"
            )
        return cls(weights_path, restore_from=model_dir, **runtime)

    @property
    def classes(self) -> tuple:  # type: ignore[override]  # read-only: the head spec's classes
        """The class names, in the order of the probability columns."""
        return self.spec.classes

    # --- the cached prefix -------------------------------------------------------------------------------------
    def prefix_maps(
        self, dataset: Dataset, views: int = 0, seed: int = 0, progress: bool | None = None, desc: str = ""
    ):
        """Frozen-prefix maps of each item: ``views`` augmented views each (0: the centre view only).

        Returns ``(maps (n_ok * max(views, 1), h, w, c), item index per row, [ImageError])``.
        """
        maps: list = []
        owner: list = []
        errors: list = []
        batch: list = []
        batch_owner: list = []
        rng = np.random.default_rng(seed)

        def run():
            if batch:
                maps.append(self.session.run(self.frozen, {self.images: np.stack(batch)}))
                owner.extend(batch_owner)
                batch.clear()
                batch_owner.clear()

        for i in progress_bar(
            range(len(dataset)), desc=desc or "frozen prefix", unit="img", progress=progress, leave=False
        ):
            try:
                img = decode(dataset.paths[i], None if dataset.arrays is None else dataset.arrays[i])
            except ImageError as exc:
                errors.append(exc)
                continue
            item_rng = np.random.default_rng([seed, i])
            if views:
                batch.extend(augmented_view(img, self.image_size, item_rng) for _ in range(views))
                batch_owner.extend([i] * views)
            else:
                batch.append(centre_view(img, self.image_size))
                batch_owner.append(i)
            if len(batch) >= self.batch_size:
                run()
        run()
        del rng
        shape = [0] + self.prefix.shape.as_list()[1:]
        return (np.concatenate(maps) if maps else np.zeros(shape, np.float32)), np.array(owner, int), errors

    # --- training ----------------------------------------------------------------------------------------------
    def train_dataset(
        self,
        dataset: Dataset,
        *,
        val: Dataset | None = None,
        val_fraction: float = defaults.VAL_FRACTION,
        views: int = FT.views,
        epochs: int = FT.epochs,
        batch_size: int = FT.batch_size,
        patience: int = FT.patience,
        seed: int = 0,
        class_weights=None,
        progress: bool | None = None,
    ) -> TrainReport:
        """Cache the frozen prefix of ``views`` augmented views per training image (centre views for validation),
        then train the trainable conv layers (backbone learning rate) and the head (learning rate) on them."""
        if tuple(dataset.classes) != self.classes:
            raise ValueError(f"data set classes {dataset.classes} differ from the model's {self.classes}")
        dataset.check_every_class()
        if val is None:
            tr, va = split_indices(len(dataset), val_fraction, seed, dataset.labels)
            dataset, val = dataset.subset(tr), dataset.subset(va)
        t0 = time.perf_counter()
        x_tr, own_tr, err_tr = self.prefix_maps(dataset, views, seed, progress, "prefix (train views)")
        x_va, own_va, err_va = self.prefix_maps(val, 0, seed, progress, "prefix (validation)")
        if not len(x_tr):
            raise ValueError("no usable training image: " + "; ".join(str(e) for e in err_tr[:5]))
        y_tr, y_va = dataset.labels[own_tr].astype(np.int64), val.labels[own_va].astype(np.int64)
        t1 = time.perf_counter()
        # Scale the pooled features to unit spread (like HeadGraph's standardisation of cached features).
        pooled = np.concatenate(
            [self.session.run(self.pooled, {self.prefix: x_tr[s : s + 64]}) for s in range(0, len(x_tr), 64)]
        )
        std = float(np.std(pooled)) or 1.0
        self.head.reset(self.session, seed)  # (its init op also resets feature_scale: set it after)
        self.session.run(self._set_feature_scale, {self._scale_in: 1.0 / std})
        weights = resolve_class_weights(class_weights, y_tr, len(self.classes))
        history = self.head.fit(
            self.session,
            x_tr,
            y_tr,
            x_va if len(x_va) else None,
            y_va if len(x_va) else None,
            epochs=epochs,
            batch_size=batch_size,
            patience=patience,
            seed=seed,
            class_weights=weights,
            progress=progress,
            standardize=False,
            desc="fine-tune",
        )
        report = TrainReport(
            history,
            own_tr,
            own_va,
            skipped=err_tr + err_va,
            seconds_features=t1 - t0,
            seconds_head=time.perf_counter() - t1,
        )
        return report

    # --- prediction --------------------------------------------------------------------------------------------
    def _probs(self, images: np.ndarray) -> np.ndarray:
        out = []
        for s in range(0, len(images), self.batch_size):
            maps = self.session.run(self.frozen, {self.images: images[s : s + self.batch_size]})
            out.append(self.session.run(self.head.predictions, {self.prefix: maps}))
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def predict(self, image_paths, errors: str = "report", progress: bool = False) -> np.ndarray:
        """Class probabilities (n, K) for image files, NaN rows for unreadable images (see ``last_errors``)."""
        out, self.last_errors = predict_paths(
            image_paths,
            lambda paths: image_batches(paths, self.image_size, self.batch_size),
            lambda n: (n, len(self.classes)),
            self._probs,
            errors,
        )
        return out

    def predict_arrays(self, arrays) -> np.ndarray:
        """Probabilities (n, K) for uint8 (n, h, w, 3) images, centre-cropped and resized like files."""
        from vggtransfer.data.datasets import resize_arrays

        return self._probs(resize_arrays(arrays, self.image_size))

    # --- persistence -------------------------------------------------------------------------------------------
    def checkpoint_variables(self) -> list:
        """Names of the variables the checkpoint holds: the trainable convs, the head and its input scale."""
        return (
            [v.op.name for v in self.head.saver._var_list]
            if isinstance(self.head.saver._var_list, list)
            else sorted(self.head.saver._var_list)
        )

    def save(self, path, protect=(), extra: dict | None = None) -> Path:
        """The trainable conv variables + head checkpoint and vggtransfer.json (plus the ``extra`` fields),
        atomically (see write_model_dir)."""

        def write(tmp: Path) -> None:
            with self.graph.as_default():
                self.head.saver.save(self.session, str(tmp / CHECKPOINT), write_meta_graph=False, write_state=False)
            cfg = {
                "format_version": FORMAT_VERSION,
                "kind": self.kind,
                **self.config,
                "feature_scale": float(self.session.run(self.feature_scale)),
                "learning_rate": self.learning_rate,
                "backbone_learning_rate": self.backbone_learning_rate,
                "weights_file": Path(self.weights_path).name,
                "head": self.spec.to_dict(),
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **(extra or {}),
            }
            (tmp / MODEL_FILE).write_text(json.dumps(cfg, indent=2))

        return write_model_dir(path, write, protect)
