"""Classifier, linear model and fine-tuned model on synthetic weights: train, save, restore, predict, top-k."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from recipe_data import colour_folder, colour_h5

from vggtransfer.data import datasets
from vggtransfer.data.images import ImageError
from vggtransfer.data.store import FeatureStoreMismatch, build_store, open_store
from vggtransfer.features.extractor import FeatureExtractor
from vggtransfer.models.classifier import VggClassifier
from vggtransfer.models.registry import load_model
from vggtransfer.models.vgg16 import Vgg16

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIT = dict(epochs=80, patience=20, batch_size=8, progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    ds = datasets.from_folder(colour_folder(root / "data", per_class=10))
    bad = root / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return ds, str(bad)


def test_classifier_trains_saves_restores_predicts_top_k(scaled_npy, data, tmp_path):
    ds, bad = data
    clf = VggClassifier(scaled_npy, classes=ds.classes, image_size=32, hidden=(16,), learning_rate=1e-2)
    report = clf.train_dataset(ds, val_fraction=0.3, class_weights="balanced", **FIT)
    assert report.history.best_val_metric >= 0.8
    probs = clf.predict(ds.paths)
    assert probs.shape == (20, 2) and np.allclose(probs.sum(1), 1)
    clf.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "vggtransfer.json").read_text())
    assert cfg["kind"] == "classifier" and cfg["head"]["classes"] == ["blue", "red"] and cfg["pooling"] == "max"
    again = load_model(tmp_path / "m", scaled_npy)
    assert isinstance(again, VggClassifier)
    paths = [ds.paths[0], bad, ds.paths[-1]]
    with pytest.warns(RuntimeWarning, match="bad.png"):
        p2 = again.predict(paths)
    assert np.isnan(p2[1]).all() and np.allclose(p2[[0, 2]], probs[[0, -1]], atol=1e-5)
    top = again.predict_top_k(paths, k=2)
    assert isinstance(top[1], ImageError) and "bad.png" in str(top[1])
    assert top[0][0][0] == "blue" and top[2][0][0] == "red" and len(top[0]) == 2
    assert top[0][0][1] >= top[0][1][1]
    with pytest.raises(ImageError):
        again.predict_top_k(bad)
    assert again.predict_labels([ds.paths[0]]) == ["blue"]


def test_classifier_from_store_and_h5_arrays(scaled_npy, tmp_path):
    ds = datasets.from_signs_h5(colour_h5(tmp_path / "s.h5", 8))
    clf = VggClassifier(scaled_npy, classes=ds.classes, image_size=32, hidden=(16,), learning_rate=1e-2)
    with FeatureExtractor(scaled_npy, pooling="max", image_size=32) as fx:
        st = open_store(build_store(tmp_path / "f.h5", ds, fx, progress=False))
    clf.train_store(st, val_fraction=0.25, **FIT)
    ev = clf.evaluate_dataset(ds)
    assert ev["accuracy"] >= 0.8 and ev["confusion"].sum() == 16
    with FeatureExtractor(scaled_npy, pooling="avg", image_size=32) as fx:
        other = open_store(build_store(tmp_path / "g.h5", ds, fx, progress=False))
    with pytest.raises(FeatureStoreMismatch, match="pooling: stored 'avg' vs requested 'max'"):
        clf.train_store(other)


def test_regressor_uses_the_same_machinery_and_loads(scaled_npy, data, tmp_path):
    ds, _ = data
    reg = Vgg16(scaled_npy, image_size=32, hidden=(8,))
    reg.train(ds.paths, ds.labels * 10.0 + 1.0, **FIT)
    reg.save(tmp_path / "r")
    again = load_model(tmp_path / "r", scaled_npy)
    assert isinstance(again, Vgg16)
    assert np.allclose(again.predict(ds.paths[:3]), reg.predict(ds.paths[:3]), atol=1e-4)


LINEAR_CHILD = textwrap.dedent("""
    import json, sys
    from vggtransfer.models.registry import load_model
    m = load_model(sys.argv[1], sys.argv[2])
    out = m.predict_top_k(sys.argv[3:], 1)
    print(json.dumps([r if isinstance(r, list) else str(r) for r in out]))
""")


def test_linear_model_grid_search_report_and_fresh_process_predict(scaled_npy, data, tmp_path):
    from vggtransfer.models.linear import LinearModel

    ds, bad = data
    with FeatureExtractor(scaled_npy, pooling="avg", image_size=32) as fx:
        st = open_store(build_store(tmp_path / "f.h5", ds, fx, progress=False))
    lm = LinearModel.fit(st, cs=(0.01, 1.0), cv=3)
    assert set(lm.cv_results["best_params"]) == {"C", "standardize"}
    rep = lm.report(st, png=tmp_path / "cm.png")
    assert rep["accuracy"] >= 0.9 and "precision" in rep["report"] and (tmp_path / "cm.png").stat().st_size > 0
    lm.save(tmp_path / "lin")
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", LINEAR_CHILD, str(tmp_path / "lin"), str(scaled_npy), ds.paths[0], bad, ds.paths[-1]],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out[0][0][0] == "blue" and out[2][0][0] == "red" and "bad.png" in out[1]


def test_finetune_checkpoint_holds_only_trainable_convs_and_head(scaled_npy, data, tmp_path):
    import tensorflow as tf

    from vggtransfer.models.finetune import FineTunedClassifier

    ds, bad = data
    ft = FineTunedClassifier(
        scaled_npy,
        classes=ds.classes,
        trainable_from="conv5_2",
        image_size=32,
        hidden=(16,),
        dropout=0.0,
        learning_rate=1e-2,
        backbone_learning_rate=1e-4,
    )
    before = ft.session.run(ft.backbone_variables[0])
    report = ft.train_dataset(ds, val_fraction=0.3, views=2, epochs=8, patience=8, batch_size=8, progress=False)
    assert report.history.best_val_metric >= 0.8
    assert not np.allclose(before, ft.session.run(ft.backbone_variables[0]))  # conv5_2 was trained
    ft.save(tmp_path / "ft")
    names = {n for n, _ in tf.train.list_variables(str(tmp_path / "ft" / "head.ckpt"))}
    assert names == {
        "finetune/conv5_2/weights",
        "finetune/conv5_2/biases",
        "finetune/conv5_3/weights",
        "finetune/conv5_3/biases",
        "head/fc6/weights",
        "head/fc6/biases",
        "head/output/weights",
        "head/output/biases",
        "head/input_scale",
        "head/input_mean",
    }
    cfg = json.loads((tmp_path / "ft" / "vggtransfer.json").read_text())
    assert cfg["kind"] == "finetuned" and cfg["trainable_from"] == "conv5_2"
    probs = ft.predict(ds.paths[:4])
    again = load_model(tmp_path / "ft", scaled_npy)
    with pytest.warns(RuntimeWarning):
        p2 = again.predict(ds.paths[:4] + [bad])
    assert np.allclose(p2[:4], probs, atol=1e-5) and np.isnan(p2[4]).all()
    assert again.predict_top_k([ds.paths[0]], 2)[0][0][0] == "blue"


def test_augmented_views_are_seeded_and_vary():
    from PIL import Image

    from vggtransfer.models.finetune import augmented_view

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    a = augmented_view(img, 32, np.random.default_rng(1))
    b = augmented_view(img, 32, np.random.default_rng(1))
    c = augmented_view(img, 32, np.random.default_rng(2))
    assert a.shape == (32, 32, 3) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.0 <= a.min() and a.max() <= 1.0


def test_a_confusion_matrix_of_many_classes_stays_legible(tmp_path):
    """102 classes (the Caltech benchmark's): the text is the largest confusions, not 103 lines of 1,854 columns, and
    the picture has no count per cell and stays under 2,600 px (it was 7,260 px square and took 14 s)."""
    from PIL import Image

    from vggtransfer.models.linear import format_confusion, save_confusion_png

    k = 102
    classes = [f"class_{i:03d}" for i in range(k)]
    classes[0] = "BACKGROUND_Google"
    cm = np.diag(np.full(k, 30))
    cm[3, 7], cm[5, 1], cm[0, 9] = 9, 4, 1
    text = format_confusion(cm, classes).splitlines()
    assert "102 classes" in text[0] and "3 most frequent confusions" in text[0]
    assert [line.split() for line in text[1:]] == [
        ["class_003", "->", "class_007:", "9"],
        ["class_005", "->", "class_001:", "4"],
        ["BACKGROUND_Google", "->", "class_009:", "1"],
    ]
    assert max(len(line) for line in text) <= 120
    assert "no item was confused" in format_confusion(np.diag(np.full(k, 3)), classes)
    png = save_confusion_png(cm, classes, tmp_path / "cm.png", "102 classes")
    assert max(Image.open(png).size) <= 2600
    small = format_confusion(np.array([[3, 1], [0, 2]]), ["ants", "bees"]).splitlines()
    assert small[0].split() == ["true\\pred", "ants", "bees"] and small[1].split() == ["ants", "3", "1"]
