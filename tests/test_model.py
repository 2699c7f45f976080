"""Vgg16 (the regressor): train on cached features, save the head only, restore in a fresh process, predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, scaled_weights, shared_data
from PIL import Image

from vggtransfer.data.images import ImageError
from vggtransfer.data.splits import split_indices
from vggtransfer.models import defaults
from vggtransfer.models.modeldir import CHECKPOINT, MODEL_FILE, ModelError
from vggtransfer.models.vgg16 import Vgg16

SIZE = 32


def _images(folder: Path, n: int, seed: int = 0) -> list:
    """n small images: half reddish ("big" things), half bluish ("small" things)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        base = np.array([200, 40, 40] if i % 2 == 0 else [40, 40, 200], np.float64)
        img = np.clip(base + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
        p = folder / f"img{i:03d}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    paths = _images(folder, 24)
    targets = np.array([100.0 if i % 2 == 0 else 40.0 for i in range(24)])
    return paths, targets


@pytest.fixture(scope="module")
def trained(dataset, scaled_npy, tmp_path_factory):
    paths, targets = dataset
    model = Vgg16(scaled_npy, image_size=SIZE, hidden=16, l2=0.0, dropout=0.0, learning_rate=3e-3)
    report = model.train(paths, targets, epochs=60, patience=60, batch_size=8, progress=False)
    out = tmp_path_factory.mktemp("models") / "m"
    model.save(out)
    return model, report, out


def test_train_learns_and_reports(trained, dataset):
    model, report, _ = trained
    paths, targets = dataset
    h = report.history
    assert len(h.train_loss) == len(h.val_loss) >= 1
    assert h.train_loss[h.best_epoch - 1] < h.train_loss[0]
    assert len(report.train_index) + len(report.val_index) == 24 and not set(report.train_index) & set(report.val_index)
    pred = model.predict(paths)
    assert pred.shape == (24,) and pred.dtype == np.float64
    assert np.sqrt(np.mean((pred - targets) ** 2)) < 20  # targets have std 30: the head learned the two groups


def test_checkpoint_holds_only_the_head(trained):
    _, _, out = trained
    shapes = dict(tf.train.list_variables(str(out / CHECKPOINT)))
    names = set(shapes)
    # the head is an ensemble of AUTO.members copies of the card's fc6 (here 16 units) + 1 output
    assert shapes["head/fc6/weights"][0] == shapes["head/output/weights"][0] == defaults.AUTO.members
    assert shapes["head/fc6/weights"][-1] == 16 and shapes["head/output/weights"][1:] == [16, 1]
    assert names == {
        "head/fc6/weights",
        "head/fc6/biases",
        "head/output/weights",
        "head/output/biases",
        "head/input_scale",
        "head/input_mean",
    }
    assert not list(out.glob("*.meta"))
    assert sum(f.stat().st_size for f in out.iterdir()) < 200_000
    cfg = json.loads((out / MODEL_FILE).read_text())
    feats = cfg["feature_config"]  # one block of the square crop: the classic feature config
    assert feats["image_size"] == SIZE and feats["pooling"] == "avg" and feats["end_point"] == "pool5"
    assert cfg["head"]["hidden"] == [16] and cfg["model"]["model"] == "dense" and cfg["card"] == "Vgg16"
    assert cfg["head"]["target_scale"] > 0 and len(cfg["weights_sha256"]) == 64


def test_restore_in_a_fresh_process_predicts_the_same(trained, dataset, scaled_npy):
    model, _, out = trained
    paths, _ = dataset
    expected = model.predict(paths[:3])
    code = (
        "import json, sys; from vggtransfer.models.vgg16 import Vgg16; "
        f"m = Vgg16({str(scaled_npy)!r}, restore_from={str(out)!r}); "
        f"print(json.dumps(m.predict({[str(p) for p in paths[:3]]!r}).tolist()))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bad_images_in_a_batch_are_reported_not_fatal(trained, dataset, tmp_path):
    model, _, _ = trained
    paths, _ = dataset
    (tmp_path / "bad.jpg").write_text("not an image")
    batch = [paths[0], tmp_path / "missing.jpg", paths[1], tmp_path / "bad.jpg"]
    with pytest.warns(RuntimeWarning, match=r"2 of 4 images could not be read.*missing\.jpg.*bad\.jpg"):
        pred = model.predict(batch)
    assert np.isfinite(pred[[0, 2]]).all() and np.isnan(pred[[1, 3]]).all()
    assert [Path(e.path).name for e in model.last_errors] == ["missing.jpg", "bad.jpg"]
    np.testing.assert_allclose(pred[[0, 2]], model.predict(paths[:2]))
    with pytest.raises(ImageError, match=r"missing\.jpg: no such file"):
        model.predict(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match=r"missing\.jpg"):  # the first bad one
        model.predict(batch, errors="raise")


def test_training_skips_bad_images(dataset, scaled_npy, tmp_path):
    paths, targets = dataset
    (tmp_path / "bad.jpg").write_bytes(b"")
    model = Vgg16(scaled_npy, image_size=SIZE, hidden=8)
    report = model.train(list(paths[:8]) + [tmp_path / "bad.jpg"], np.r_[targets[:8], 1.0], epochs=2, progress=False)
    assert [Path(e.path).name for e in report.skipped] == ["bad.jpg"]
    assert 8 not in set(report.train_index) | set(report.val_index)


def test_same_seed_same_model(dataset, scaled_npy):
    paths, targets = dataset
    preds = []
    for _ in range(2):
        model = Vgg16(scaled_npy, image_size=SIZE, hidden=8, dropout=0.5)
        model.train(paths, targets, epochs=5, seed=3, progress=False)
        preds.append(model.predict(paths[:4]))
        model.close()
    np.testing.assert_array_equal(preds[0], preds[1])


def test_interrupted_save_leaves_previous_model_usable(trained, scaled_npy, monkeypatch, tmp_path):
    model, _, _ = trained
    target = tmp_path / "model"
    model.save(target)
    before = (target / MODEL_FILE).read_text()
    real_replace = os.replace
    calls = []

    def crash_on_swap(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old model moved aside, new one not yet in place
            raise KeyboardInterrupt("killed mid-save")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_swap)
    with pytest.raises(KeyboardInterrupt):
        model.save(target)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not target.exists() and (tmp_path / "model.previous" / MODEL_FILE).read_text() == before
    restored = Vgg16(scaled_npy, restore_from=target)  # falls back to the previous save
    assert restored.predict(model.extractor.config and []).shape == (0,)
    assert not list(tmp_path.glob(".model.*.tmp"))  # no temp directory left behind


def test_restore_errors(trained, tmp_path, dataset):
    _, _, out = trained
    with pytest.raises(ModelError, match="no such model directory"):
        Vgg16(restore_from=tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a vggtransfer model directory"):
        Vgg16(restore_from=tmp_path / "empty")
    other = tmp_path / "other.npy"
    from vggtransfer.weights.npy import save_weights

    save_weights(scaled_weights(seed=7), other)
    with pytest.raises(ModelError, match="trained on other VGG weights"):
        Vgg16(other, restore_from=out)


def test_bad_training_input(scaled_npy, dataset):
    paths, targets = dataset
    model = Vgg16(scaled_npy, image_size=SIZE, hidden=4)
    with pytest.raises(ValueError, match="24 image paths but 3 targets"):
        model.train(paths, targets[:3])
    with pytest.raises(ValueError, match=r"targets must be finite numbers; rows \[1\]"):
        model.train_on_features(np.zeros((3, 512)), [1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match=r"features must have shape \(n, 512\)"):
        model.train_on_features(np.zeros((3, 7)), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="no usable image"):
        model.train(["/nonexistent/a.jpg"], [1.0])


def test_split_indices_is_deterministic_and_stratified():
    labels = np.array([0] * 30 + [1] * 10)
    tr1, va1 = split_indices(40, 0.2, 5, labels)
    tr2, va2 = split_indices(40, 0.2, 5, labels)
    np.testing.assert_array_equal(va1, va2)
    assert sorted(np.r_[tr1, va1].tolist()) == list(range(40))
    assert (labels[va1] == 0).sum() == 6 and (labels[va1] == 1).sum() == 2


def test_split_indices_keeps_each_group_on_one_side():
    """40 images, each as two rows (a photo and its mirror image: group ids tiled): the split is of images, stratified
    by their class; unique ids give the split without groups; ids of the wrong length are refused."""
    labels = np.tile(np.array([0] * 30 + [1] * 10), 2)
    groups = np.tile(np.arange(40), 2)
    tr, va = split_indices(80, 0.2, 5, labels, groups)
    assert sorted(np.r_[tr, va].tolist()) == list(range(80))
    assert not set(groups[tr]) & set(groups[va]) and len(va) == 16
    assert (labels[va] == 0).sum() == 12 and (labels[va] == 1).sum() == 4
    plain = split_indices(40, 0.2, 5, labels[:40])
    for a, b in zip(split_indices(40, 0.2, 5, labels[:40], np.arange(40)), plain):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="one id per row"):
        split_indices(80, 0.2, 5, labels, groups[:40])


def test_real_tiger_cat_regressor_small(real_weights, shared_dir, tmp_path):
    """Real weights, 24 tiger + 24 cat photos: held-out tigers are predicted longer than cats."""
    from sklearn.metrics import roc_auc_score

    data = shared_data(shared_dir, "morvan_tiger_kittycat")
    tigers = sorted((data / "data" / "tiger").glob("*.jpg"))[:24]
    cats = sorted((data / "data" / "kittycat").glob("*.jpg"))[:24]
    rng = np.random.default_rng(0)
    y = np.r_[np.maximum(20, rng.normal(100, 30, 24)), np.maximum(10, rng.normal(40, 8, 24))]
    labels = np.r_[np.ones(24), np.zeros(24)]
    train, test = split_indices(48, 0.25, 0, labels)
    paths = tigers + cats
    model = Vgg16(real_weights, image_size=224)
    model.train([paths[i] for i in train], y[train], progress=False)
    pred = model.predict([paths[i] for i in test])
    assert roc_auc_score(labels[test], pred) >= 0.9
    demo = model.predict([data / "demo" / "tiger" / "391412.jpg", data / "demo" / "kittycat" / "000129037.jpg"])
    assert demo[0] > demo[1]
