"""The recipes' default hyperparameters, declared once: the model classes take their signature defaults from here
and the CLI shows and uses the same values (no TensorFlow import, so ``--help`` stays fast).

Where they come from: the regressor's are the best of the tiger/cat sweep (``bench/tune_regressor.py``, README
table); the classifier's are the SIGNS recipe; fine-tuning's are the hymenoptera recipe (README-recipes).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from vggtransfer.features.spec import FeatureSpec


@dataclass(frozen=True)
class HeadDefaults:
    """A head recipe's defaults: the features it reads and the head it trains."""

    end_point: str
    pooling: str
    hidden: tuple
    dropout: float
    l2: float
    learning_rate: float
    epochs: int
    patience: int

    def as_dict(self) -> dict:
        """The values as a plain dict."""
        return asdict(self)


@dataclass(frozen=True)
class FineTuneDefaults(HeadDefaults):
    """Fine-tuning adds the first trainable layer, the backbone's learning rate and the augmented views."""

    trainable_from: str = "conv5_1"
    backbone_learning_rate: float = 1e-5
    views: int = 4
    batch_size: int = 16


#: ``Vgg16`` and every regressor: global-average-pooled pool5, fc6 256 ReLU, dropout 0.5, L2 1.0, Adam 1e-3.
REGRESSOR = HeadDefaults(
    end_point="pool5", pooling="avg", hidden=(256,), dropout=0.5, l2=1.0, learning_rate=1e-3, epochs=300, patience=30
)
#: ``VggClassifier``: global-max-pooled pool5, Dense 128 ReLU, softmax.
CLASSIFIER = HeadDefaults(
    end_point="pool5", pooling="max", hidden=(128,), dropout=0.0, l2=1e-3, learning_rate=1e-3, epochs=300, patience=30
)
#: ``FineTunedClassifier``: conv5_1 onward trainable, 4 augmented views per image.
FINETUNE = FineTuneDefaults(
    end_point="pool5", pooling="avg", hidden=(256,), dropout=0.3, l2=1e-3, learning_rate=1e-3, epochs=10, patience=3
)


@dataclass(frozen=True)
class AutoDefaults:
    """``--recipe auto``: cross-validation folds, the power normalisation of every block, the Dense head's L2 grid
    (the linear models' grids are in :mod:`vggtransfer.models.select`), its ensemble members at the refit (5: the
    deep-ensembles convention, Lakshminarayanan et al. 2017; not tuned here) and the rows cross-validation runs on."""

    folds: int = 5
    power: float = 0.5
    dense_l2s: tuple = (0.1, 1.0, 10.0)
    members: int = 5
    #: Cross-validation runs on at most this many training rows (a stratified sample, at least 2 x folds per class);
    #: the winner is refitted on all of them. Bounds selection's time and memory on large sets (the Dense head's
    #: CV grows with the rows); the standard error of a CV accuracy on 5,000 rows is about 0.4 points.
    select_rows: int = 5000


AUTO = AutoDefaults()

#: Cross-validation (``--recipe auto``) needs this many training items of every class: one to train on and one to
#: score in some fold. Checked by the CLI before any weights are read, by ``train_dataset`` before any feature, and by
#: ``fit_features`` / ``make_folds`` on what survived extraction.
CV_MIN_PER_CLASS = 2

#: ``train`` notes imbalance (and names ``--class-weights balanced``) where the largest class has this many times the
#: photos of the smallest and no class weights were given.
IMBALANCE_NOTE = 3


def check_number(name: str, value, low, *, inclusive: bool = False, integer: bool = False, high=None) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a finite number above ``low`` (or at it, ``inclusive``),
    at most ``high`` when given, and whole when ``integer``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= low if inclusive else value > low) and (high is None or value <= high)
    if ok and integer:
        ok = float(value).is_integer()
    if not ok:
        what = "a whole number" if integer else "a finite number"
        bound = f"{'>=' if inclusive else '>'} {low}" + ("" if high is None else f" and <= {high}")
        raise ValueError(f"{name} must be {what} {bound}, got {value!r}")


def check_auto_settings(
    *, hidden, dropout, l2s, learning_rate, epochs, patience, folds, power, members, select_rows, threads, batch_size
) -> None:
    """Raise ValueError naming the first setting of an auto model that is out of range (Keras-style, at
    construction, before any weights are read). ``epochs``/``patience``/``threads``/``batch_size`` may be None
    (the default)."""
    if not hidden:
        raise ValueError("hidden must name at least one layer size, e.g. (256,)")
    for h in hidden:
        check_number("hidden layer sizes", h, 1, inclusive=True, integer=True)
    if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if not l2s:
        raise ValueError("l2 needs at least one value")
    for l2 in l2s:
        check_number("l2", l2, 0, inclusive=True)
    check_number("learning_rate", learning_rate, 0)
    check_number("folds", folds, 2, inclusive=True, integer=True)
    check_number("power", power, 0, high=1)
    check_number("members", members, 1, inclusive=True, integer=True)
    check_number("select_rows", select_rows, 1, inclusive=True, integer=True)
    for name, value in (("epochs", epochs), ("patience", patience), ("threads", threads), ("batch_size", batch_size)):
        if value is not None:
            check_number(name, value, 1, inclusive=True, integer=True)


#: What ``--recipe auto`` computes by default for targets (and ``Vgg16``): global average and max of pool3, pool4 and
#: pool5, from one pass over the whole image with its short side at 224 px (no crop): 1.3x the pixels of one 224 px
#: crop (README, "The main job's figures").
FEATURES = FeatureSpec(
    end_points=("pool3", "pool4", "pool5"), poolings=("avg", "max"), scales=(224,), view="whole", flip=False
)
#: For classes (``--recipe auto`` classifiers and ``vggtransfer extract``), on every CPU: the same blocks at 112, 224
#: and 320 px, 3.3x the pixels of :data:`FEATURES` on square photos. Cross-validation chooses one scale or the stack
#: (``models.select.candidate_groups``). Why these: small photos upsampled (SIGNS, 64 px) gain from the half scale
#: (CV 97.1 -> 98.0 %), photos of objects from the larger one (ants/bees CV 93.9 -> 95.5 % at 320 px, 95.9 % at
#: 384: bench/results/explore_scales.jsonl), as the VGG paper's whole-image scales 256-512 did on Caltech; 320
#: rather than 384 keeps extraction near 2.6x the 112+224 pair on every CPU instead of 3.4x. Each photo's mirror
#: image is kept as a training row of its own and predictions average the two (``mirror``: feature-level
#: augmentation, Chatfield et al. 2014), which doubles the extraction: on 30 photos per class of the training sets
#: alone (10 splits; the VGG paper's Caltech regime) it lifted SIGNS from 94.87 to 96.60 % mean class recall and
#: ants/bees from 93.10 to 93.60 %, and the outer CV on ants/bees' whole training set by 0.5 points; averaging the
#: mirror image's features instead (``flip``) had not lifted the CV
#: (``bench/explore_flip_rows.py``, BENCHMARKS.md "The mirror image as training rows").
FEATURES_CLASSES = replace(FEATURES, scales=(112, 224, 320), mirror=True)


def default_features(task: str = "classification") -> FeatureSpec:
    """The block features extracted when none are given: :data:`FEATURES_CLASSES` for classes, :data:`FEATURES` for
    targets. The same on every CPU (a model's features never depend on the machine it was trained on).

    Why one scale for targets: on the main job's 5 splits a second scale made the regressor worse (mean RMSE ratio
    1.144 against 1.101, worst 1.333 against 1.135 with a single Dense head; ``bench/results/splits_amx_features.json``):
    with noisy targets three times the candidate groups give cross-validation more ways to be fooled, and the main
    job's time budget (README) has no room for them."""
    return FEATURES_CLASSES if task == "classification" else FEATURES


IMAGE_SIZE = 224
#: ``vggtransfer extract``: global-average-pooled pool5, the linear recipe's features (README-recipes).
STORE_POOLING = "avg"
VAL_FRACTION = 0.2


def for_recipe(recipe: str, task: str) -> HeadDefaults:
    """The defaults of ``recipe`` ('head', 'finetune') for ``task`` ('classification', 'regression')."""
    if recipe == "finetune":
        return FINETUNE
    return REGRESSOR if task == "regression" else CLASSIFIER


__all__ = [
    "AutoDefaults",
    "AUTO",
    "CV_MIN_PER_CLASS",
    "IMBALANCE_NOTE",
    "check_auto_settings",
    "check_number",
    "FEATURES",
    "FEATURES_CLASSES",
    "default_features",
    "HeadDefaults",
    "FineTuneDefaults",
    "REGRESSOR",
    "CLASSIFIER",
    "FINETUNE",
    "IMAGE_SIZE",
    "STORE_POOLING",
    "VAL_FRACTION",
    "for_recipe",
]
