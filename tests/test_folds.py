"""Cross-validation folds: copies of one image are found and kept in one fold, so that a CV estimate never scores a
photo the fold's model trained on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vggtransfer.features.spec import FeatureSpec
from vggtransfer.models import folds, select


def _rows(n, d=64, seed=0):
    return np.random.default_rng(seed).gamma(1.0, 1.0, (n, d))


def test_copy_groups_finds_copies_and_only_copies():
    x = _rows(30)
    assert folds.copy_groups(x) is None  # distinct rows: nothing to group
    x[7] = x[2]
    x[20] = x[2]  # a third copy
    x[11] = x[4]
    x[12] = np.nextafter(x[5], np.inf)  # one rounding step away: another image's features, not a copy
    groups = folds.copy_groups(x)
    assert groups[7] == groups[2] == groups[20] == 2 and groups[11] == groups[4] == 4
    assert groups[12] == 12 and groups[5] == 5
    assert folds.copies_count(groups) == 3 and folds.copies_count(None) == 0
    assert len(np.unique(groups)) == 27


def test_copies_land_in_one_fold_for_classes_and_targets():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 20)
    groups = np.arange(60)
    twins = [(0, 1), (2, 3), (20, 25), (40, 59), (41, 42)]
    for a, b in twins:
        groups[b] = a
    for k in (2, 5):
        fs = folds.make_folds(y, "classification", k, seed=3, groups=groups)
        assert len(fs) == k
        for tr, te in fs:
            assert set(np.unique(y[tr])) == {0, 1, 2}
            for a, b in twins:
                assert (a in te) == (b in te), (a, b)
    targets = rng.normal(size=60)
    for tr, te in folds.make_folds(targets, "regression", 5, seed=0, groups=groups):
        for a, b in twins:
            assert (a in te) == (b in te)
    plain = folds.make_folds(y, "classification", 5, seed=3)
    same = folds.make_folds(y, "classification", 5, seed=3, groups=np.arange(60))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(plain, same))  # no copy: the folds of before


def test_a_class_made_of_copies_of_one_image_is_still_split():
    y = np.r_[np.zeros(10, int), np.ones(3, int)]
    groups = np.r_[np.arange(10), [10, 10, 10]]  # class 1: three copies of one photo
    for tr, te in folds.make_folds(y, "classification", 3, groups=groups):
        assert set(np.unique(y[tr])) == {0, 1}  # every fold trains on every class


def test_copies_across_folds_would_make_labels_that_mean_nothing_look_learnt():
    """Labels the features do not predict, every photo twice: a fold that trains on one copy and scores its twin
    reads far above chance; with the copies kept together the estimate is at chance, as it should be."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 256))
    y = rng.permutation(np.repeat([0, 1], 30))
    x, y = np.r_[x, x], np.r_[y, y]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    blocks = [("pool5.avg@32", 0, 256)]
    kw = dict(models=("ridge", "logreg"), k=5, seed=0, n_classes=2, average=False)
    leaky = select.select(x, y, blocks, "classification", **kw)
    honest = select.select(x, y, blocks, "classification", copies=folds.copy_groups(x), **kw)
    assert leaky.best.mean > 0.85 and leaky.copies == 0
    assert honest.best.mean < 0.7 and honest.copies == 60 and honest.summary()["copies"] == 60


def test_auto_says_how_many_copies_it_kept_together_and_saves_it(scaled_npy, tmp_path):
    from vggtransfer.models.auto import AutoClassifier

    spec = FeatureSpec(end_points=("pool5",), poolings=("avg",), scales=(32,))
    model = AutoClassifier(scaled_npy, features=spec, models=("ridge",), folds=3, precision="fp32")
    config = model.attach().config
    rng = np.random.default_rng(0)
    x = rng.gamma(1.0, 1.0, (40, spec.dim("vgg16"))).astype(np.float32)
    y = np.where(x[:, 0] > np.median(x[:, 0]), "b", "a")
    x, y = np.r_[x, x[:6]], np.r_[y, y[:6]]
    messages: list = []
    report = model.fit_features(x, y, config, log=messages.append, nested=3)
    assert any(m.startswith("6 training images are copies of others") for m in messages), messages
    assert report.selection["copies"] == 6
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "vggtransfer.json").read_text())["selection"]["copies"] == 6


@pytest.mark.parametrize("n", [0, 1])
def test_too_few_rows_have_no_copies(n):
    assert folds.copy_groups(np.ones((n, 4))) is None


def test_a_saved_model_keeps_its_training_fingerprints(scaled_npy, tmp_path):
    from recipe_data import colour_folder

    from vggtransfer import load_model
    from vggtransfer.data import datasets
    from vggtransfer.models.auto import AutoClassifier
    from vggtransfer.models.modeldir import ModelError

    ds = datasets.from_folder(colour_folder(tmp_path / "d", per_class=4))
    spec = FeatureSpec(end_points=("pool5",), poolings=("avg",), scales=(32,))
    model = AutoClassifier(scaled_npy, features=spec, models=("ridge",), folds=2, precision="fp32")
    messages: list = []
    model.train_dataset(ds, log=messages.append)
    assert sorted(model.training_fingerprints.tolist()) == sorted(ds.fingerprints().tolist())
    assert not any("copies" in m for m in messages)  # distinct photos: nothing said about copies
    twin = tmp_path / "d" / "blue" / "twin.png"
    twin.write_bytes(sorted((tmp_path / "d" / "red").iterdir())[0].read_bytes())
    messages.clear()
    AutoClassifier(scaled_npy, features=spec, models=("ridge",), folds=2, precision="fp32").train_dataset(
        datasets.from_folder(tmp_path / "d"), log=messages.append
    )
    assert any(m.startswith("1 training item is a copy of another (the same bytes)") for m in messages), messages
    assert any("1 of those images carries different labels" in m and str(twin) in m for m in messages), messages
    assert any(m.startswith("1 training image is a copy of another (the same features)") for m in messages)
    twin.unlink()
    model.save(tmp_path / "m")
    back = load_model(tmp_path / "m", scaled_npy)
    assert back.training_fingerprints.tolist() == model.training_fingerprints.tolist()
    feats, ok, _ = model.features_of(ds)
    model.fit_features(feats, ds.labels[ok], model.attach().config)  # rows only: no items to fingerprint
    assert model.training_fingerprints is None
    model.save(tmp_path / "rows")
    assert not (tmp_path / "rows" / "training_fingerprints.npy").exists()
    assert load_model(tmp_path / "rows", scaled_npy).training_fingerprints is None
    (tmp_path / "m" / "training_fingerprints.npy").write_bytes(b"not an array")
    with pytest.raises(ModelError, match="training_fingerprints.npy: cannot be read"):
        load_model(tmp_path / "m", scaled_npy)
