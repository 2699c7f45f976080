"""Each recipe on a small real subset (CI): SIGNS head, and ants/bees linear model, head and fine-tuning.

Small inputs (64 / 160 px) and 20 images per class keep this under a minute of CPU; each recipe must beat chance
by a clear margin (>= 50 % on 6 classes, >= 75 % on 2).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_data

from vggtransfer.data import datasets
from vggtransfer.data.store import build_store, open_store
from vggtransfer.features.extractor import FeatureExtractor
from vggtransfer.models.classifier import VggClassifier

SIZE = 160


@pytest.fixture(scope="module")
def ants_bees(shared_dir):
    root = shared_data(shared_dir, "hymenoptera", "hymenoptera_data")
    train = datasets.from_folder(root / "train").per_class(20, seed=0)
    val = datasets.from_folder(root / "val").per_class(20, seed=0)
    return train, val


@pytest.fixture(scope="module")
def ants_bees_stores(ants_bees, real_weights, tmp_path_factory):
    train, val = ants_bees
    d = tmp_path_factory.mktemp("stores")
    with FeatureExtractor(real_weights, pooling="avg", image_size=SIZE) as fx:
        return (
            open_store(build_store(d / "train.h5", train, fx, progress=False), fx.config),
            open_store(build_store(d / "val.h5", val, fx, progress=False), fx.config),
        )


def test_signs_head_beats_chance(shared_dir, real_weights):
    root = shared_data(shared_dir, "signs")
    train = datasets.signs_folder(root / "64x64_SIGNS" / "train_signs").per_class(20, seed=0)
    test = datasets.from_signs_h5(root / "test_signs.h5", split="test")
    clf = VggClassifier(real_weights, classes=train.classes, image_size=64, pooling="max", hidden=(128,))
    clf.train_dataset(train, val_fraction=0.2, epochs=200, patience=30, progress=False)
    acc = clf.evaluate_dataset(test)["accuracy"]
    assert acc >= 0.5, f"SIGNS test accuracy {acc:.3f} (chance 0.167)"


def test_ants_bees_linear_beats_chance(ants_bees_stores):
    from vggtransfer.models.linear import LinearModel

    train, val = ants_bees_stores
    lm = LinearModel.fit(train, cs=(0.01, 0.1, 1.0), cv=3)
    acc = lm.report(val)["accuracy"]
    assert acc >= 0.75, f"linear val accuracy {acc:.3f}"


def test_ants_bees_head_beats_chance(ants_bees_stores, real_weights):
    train, val = ants_bees_stores
    clf = VggClassifier(
        real_weights, classes=train.label_names, image_size=SIZE, pooling="avg", hidden=(128,), dropout=0.0
    )
    clf.train_store(train, val_fraction=0.2, epochs=200, patience=30, progress=False)
    acc = float(np.mean(clf.head.predict_features(clf.session, val.features).argmax(1) == val.labels))
    assert acc >= 0.75, f"head val accuracy {acc:.3f}"


def test_ants_bees_finetune_beats_chance(ants_bees, real_weights):
    from vggtransfer.models.finetune import FineTunedClassifier

    train, val = ants_bees
    ft = FineTunedClassifier(
        real_weights, classes=train.classes, trainable_from="conv5_1", image_size=SIZE, hidden=(128,), dropout=0.0
    )
    ft.train_dataset(train, val_fraction=0.2, views=1, epochs=3, patience=3, progress=False)
    acc = ft.evaluate_dataset(val)["accuracy"]
    assert acc >= 0.75, f"fine-tuned val accuracy {acc:.3f}"
