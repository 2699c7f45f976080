"""The auto recipe: block features (one preprocessing path, any image size, bucketed batches, flip), the
cross-validated selection and calibration, and the auto models' train / save / restore / predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from recipe_data import colour_folder

from vggtransfer.core import runtime
from vggtransfer.data import datasets
from vggtransfer.data.images import load_image, prepare_array, view_geometry
from vggtransfer.features.blocks import BlockExtractor
from vggtransfer.features.spec import FeatureSpec, normalise_blocks, parse_block_name
from vggtransfer.models import calibration, nested, select, solvers


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return colour_folder(tmp_path_factory.mktemp("auto") / "photos", per_class=8)


def _photo(path, w, h, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)
    arr = np.clip(np.asarray(img, np.int16) + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


# --- one preprocessing path -----------------------------------------------------------------------------------
def test_every_copy_of_the_crop_is_the_same_view_even_shrunk_over_3x(tmp_path):
    """A file and the same pixels in memory, through every caller (features, arrays, fine-tuning validation), give
    the same view; 640 -> 64 px is a 10x reduction, where Pillow's reducing_gap matters."""
    from vggtransfer.models.finetune import centre_view

    path = _photo(tmp_path / "big.png", 640, 480)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    from_file = load_image(path, 64)
    assert from_file.shape == (64, 64, 3)
    np.testing.assert_array_equal(prepare_array(pixels, 64), from_file)
    np.testing.assert_array_equal(datasets.resize_arrays(pixels[None], 64)[0], from_file)
    np.testing.assert_array_equal(centre_view(Image.open(path), 64), from_file)
    whole = load_image(path, 64, mode="whole")
    np.testing.assert_array_equal(prepare_array(pixels, 64, "whole"), whole)


@pytest.mark.parametrize(
    "w, h, size, box, out",
    [
        (400, 300, 224, (0, 0, 400, 300), (288, 224)),  # 4:3 -> 298.7, rounded to a multiple of 32
        (300, 400, 224, (0, 0, 300, 400), (224, 288)),
        (1000, 200, 64, (300, 0, 700, 200), (128, 64)),  # a 5:1 panorama keeps its central 2:1
        (50, 50, 256, (0, 0, 50, 50), (256, 256)),  # small images are upsampled
    ],
)
def test_whole_view_geometry(w, h, size, box, out):
    assert view_geometry(w, h, size, "whole") == (box, out)
    with pytest.raises(ValueError, match="view mode"):
        view_geometry(w, h, size, "zoom")


def test_feature_spec_layout_and_errors():
    spec = FeatureSpec(end_points=("pool4", "pool5"), poolings=("avg", "max"), scales=(224, 320))
    blocks = spec.blocks("vgg16")
    assert [b[0] for b in blocks[:4]] == ["pool4.avg@224", "pool4.max@224", "pool5.avg@224", "pool5.max@224"]
    assert spec.dim("vgg16") == 2 * 4 * 512 and blocks[-1] == ("pool5.max@320", 3584, 4096)
    assert parse_block_name("pool3.max@256") == ("pool3", "max", 256)
    assert FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    for bad, match in [
        (dict(poolings=("sum",)), "poolings"),
        (dict(scales=(16,)), "scales"),
        (dict(view="zoom"), "view"),
        (dict(end_points=()), "end point"),
    ]:
        with pytest.raises(ValueError, match=match):
            FeatureSpec(**bad)
    with pytest.raises(ValueError, match="unknown end point 'conv5_4' for vgg16"):
        FeatureSpec(end_points=("conv5_4",)).check("vgg16")
    with pytest.raises(ValueError, match="unknown feature spec fields: zoom"):
        FeatureSpec.from_dict({"zoom": 2})


def test_a_mirror_spec_keeps_the_mirror_images_blocks_as_the_rows_second_half():
    spec = FeatureSpec(end_points=("pool4", "pool5"), poolings=("avg",), scales=(64, 96), mirror=True)
    photo = spec.blocks("vgg16")
    assert [b[0] for b in photo] == ["pool4.avg@64", "pool5.avg@64", "pool4.avg@96", "pool5.avg@96"]
    assert spec.dim("vgg16") == 2 * photo[-1][2] == 4096
    assert spec.mirror_blocks("vgg16") == [(n, a + 2048, b + 2048) for n, a, b in photo]
    assert spec.views("vgg16") == [photo, spec.mirror_blocks("vgg16")]
    assert FeatureSpec(scales=(64,)).views("vgg16") == [FeatureSpec(scales=(64,)).blocks("vgg16")]
    assert FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    old = {k: v for k, v in FeatureSpec(scales=(64,)).to_dict().items() if k != "mirror"}  # saved before the field
    assert FeatureSpec.from_dict(old).mirror is False
    with pytest.raises(ValueError, match="flip .* and mirror .* exclude each other"):
        FeatureSpec(flip=True, mirror=True)
    with pytest.raises(ValueError, match="mirror=False"):
        FeatureSpec().mirror_blocks("vgg16")


def test_normalise_blocks_unit_norm_per_block():
    blocks = [("a", 0, 3), ("b", 3, 5)]
    x = np.array([[1.0, 4.0, 0.0, 9.0, 16.0]])
    z = normalise_blocks(x, blocks, power=0.5)
    np.testing.assert_allclose(np.linalg.norm(z[:, :3]), 1.0, rtol=1e-6)
    np.testing.assert_allclose(z[0, 3:], np.array([3.0, 4.0]) / 5.0, rtol=1e-6)


def test_normalise_blocks_in_chunks_and_only_some_blocks_equal_the_whole():
    """Row chunks (which bound the float64 work space) change no bit; ``only`` returns the named blocks' columns in
    the order named, as selecting them from the whole result does."""
    from vggtransfer.models.select import columns

    blocks = [("a", 0, 3), ("b", 3, 5), ("c", 5, 9)]
    x = np.random.default_rng(0).normal(size=(37, 9)).astype(np.float32)
    whole = normalise_blocks(x, blocks, power=0.5, chunk_rows=10**6)
    for chunk in (1, 4, 36):
        np.testing.assert_array_equal(normalise_blocks(x, blocks, power=0.5, chunk_rows=chunk), whole)
    for names in (["c", "a"], ["b"]):
        part = normalise_blocks(x, blocks, power=0.5, only=names, chunk_rows=5)
        np.testing.assert_array_equal(part, whole[:, columns(blocks, names)])
    assert normalise_blocks(x[:0], blocks).shape == (0, 9)


# --- the extractor ----------------------------------------------------------------------------------------------
def test_mixed_sizes_bucketed_equal_one_at_a_time_and_flip_averages_and_mirror_keeps(scaled_npy, tmp_path):
    sizes = [(80, 60), (60, 80), (64, 64), (90, 60), (80, 60), (120, 40), (64, 64)]
    paths = [_photo(tmp_path / f"{i}.png", w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    paths.insert(3, tmp_path / "missing.jpg")
    spec = FeatureSpec(end_points=("pool4", "pool5"), scales=(64, 96))
    with BlockExtractor(scaled_npy, spec, batch_size=2, precision="fp32") as fx:
        feats, ok, errors = fx.extract_paths(paths, progress=False)
        assert ok == [0, 1, 2, 4, 5, 6, 7] and [e.path for e in errors] == [str(tmp_path / "missing.jpg")]
        assert feats.shape == (7, spec.dim("vgg16")) and fx.config["features"] == spec.to_dict()
        for row, i in zip(feats, ok):  # one image per batch: no bucketing at all
            single, _, _ = fx.extract_paths([paths[i]], progress=False)
            np.testing.assert_allclose(row, single[0], rtol=2e-5, atol=1e-6)
        pixels = [np.asarray(Image.open(paths[i]).convert("RGB")) for i in ok]
        from_arrays, ok2, _ = fx.extract_images(pixels, progress=False)
        np.testing.assert_allclose(from_arrays, feats, rtol=2e-5, atol=1e-6)
        mirrored, _, _ = fx.extract_images([p[:, ::-1] for p in pixels], progress=False)
    with BlockExtractor(
        scaled_npy,
        FeatureSpec(end_points=("pool4", "pool5"), scales=(64, 96), flip=True),
        batch_size=3,
        precision="fp32",
    ) as fx:
        flipped, _, _ = fx.extract_images(pixels, progress=False)
    np.testing.assert_allclose(flipped, (feats + mirrored) / 2, rtol=2e-5, atol=1e-6)
    mirror_spec = FeatureSpec(end_points=("pool4", "pool5"), scales=(64, 96), mirror=True)
    with BlockExtractor(scaled_npy, mirror_spec, batch_size=3, precision="fp32") as fx:
        kept, _, _ = fx.extract_paths([paths[i] for i in ok], progress=False)
        assert fx.dim == mirror_spec.dim("vgg16") and fx.config["features"]["mirror"] is True
    np.testing.assert_allclose(kept, np.concatenate([feats, mirrored], axis=1), rtol=2e-5, atol=1e-6)


def test_one_crop_block_is_the_classic_feature(scaled_npy, folder):
    from vggtransfer.features.extractor import FeatureExtractor

    paths = sorted(folder.rglob("*.*"))[:5]
    spec = FeatureSpec(end_points=("pool5",), poolings=("avg",), scales=(32,), view="crop")
    with (
        BlockExtractor(scaled_npy, spec, precision="fp32") as bx,
        FeatureExtractor(scaled_npy, end_point="pool5", pooling="avg", image_size=32, precision="fp32") as fx,
    ):
        np.testing.assert_allclose(bx.extract_paths(paths)[0], fx.extract_paths(paths)[0], rtol=1e-5, atol=1e-7)
        assert bx.config == fx.config  # so classic stores and auto models on one crop block go together


# --- selection and calibration -----------------------------------------------------------------------------------
def test_ridge_path_matches_scikit_learn():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    for n, d in [(60, 20), (20, 60)]:
        x, y, xt = rng.normal(size=(n, d)), rng.normal(size=n), rng.normal(size=(5, d))
        path = solvers.ridge_path(x, y, xt, [0.1, 10.0])
        for row, alpha in zip(path, [0.1, 10.0]):
            np.testing.assert_allclose(row, Ridge(alpha=alpha).fit(x, y).predict(xt), rtol=1e-7, atol=1e-9)


def test_ridge_out_of_fold_path_matches_scikit_learn_per_fold():
    # Several outputs (one-hot codes), both the kernel (d > n) and the cross-product (d < n) forms, the Gram matrix
    # shared by the folds: every fold's predictions are a Ridge fitted on that fold's training rows alone.
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(1)
    for n, d in [(90, 20), (30, 70)]:
        x, y = rng.normal(1.0, 1.0, (n, d)), np.eye(4)[rng.integers(0, 4, n)]
        folds = select.make_folds(y.argmax(1), "classification", 3)
        oof = solvers.ridge_oof(x, y, folds, [0.05, 3.0])
        assert oof.shape == (2, n, 4)
        for i, alpha in enumerate([0.05, 3.0]):
            for tr, te in folds:
                want = Ridge(alpha=alpha).fit(x[tr], y[tr]).predict(x[te])
                np.testing.assert_allclose(oof[i, te], want, rtol=1e-7, atol=1e-9)
    fitted = solvers.fit_ridge(x, y[:, 2], 0.5)
    sk = Ridge(alpha=0.5).fit(x, y[:, 2])
    np.testing.assert_allclose(fitted["coef"], sk.coef_, rtol=1e-7, atol=1e-9)
    assert fitted["intercept"] == pytest.approx(sk.intercept_)


def test_logreg_arrays_give_one_row_per_class_binary_and_absent_classes_included():
    """A fitted LogisticRegression as (K, d) weights: the softmax of ``x W^T + b`` is scikit-learn's predict_proba
    for the classes it saw (binary too, where it keeps one row), and 0 for a class absent from its labels."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (60, 5))
    for labels in ([0, 2], [0, 1, 3]):  # binary with class 1 absent; three classes with class 2 absent, K = 4
        y = rng.choice(labels, 60)
        clf = LogisticRegression(C=1.0).fit(x, y)
        coef, intercept = solvers.logreg_arrays(clf, 4)
        assert coef.shape == (4, 5) and intercept.shape == (4,)
        probs = np.exp(calibration.scores_to_log_probs(x @ coef.T + intercept))
        np.testing.assert_allclose(probs[:, clf.classes_], clf.predict_proba(x), rtol=1e-9, atol=1e-12)
        absent = [c for c in range(4) if c not in labels]
        assert np.all(probs[:, absent] == 0.0)


def test_the_refit_on_many_rows_sums_over_chunks_of_float32_rows(monkeypatch):
    """More rows than columns: the refit's ridge sums its cross-products over chunks of rows (no float64 copy of a
    large feature matrix); it is scikit-learn's Ridge on the same float32 rows, one output or several."""
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(2)
    x = rng.gamma(1.0, 1.0, (103, 12)).astype(np.float32)
    y = np.eye(3)[rng.integers(0, 3, 103)]
    monkeypatch.setattr(solvers, "CHUNK_ROWS", 10)  # 11 chunks
    for target in (y, y[:, 1]):
        fitted = solvers.fit_ridge(x, target, 0.3)
        sk = Ridge(alpha=0.3).fit(x.astype(np.float64), target)
        np.testing.assert_allclose(fitted["coef"], sk.coef_, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(fitted["intercept"], sk.intercept_, rtol=1e-6, atol=1e-9)
    grad_chunked = solvers._logreg_tol(x, y.argmax(1), 1.0)
    monkeypatch.setattr(solvers, "CHUNK_ROWS", 1000)
    assert grad_chunked == pytest.approx(solvers._logreg_tol(x, y.argmax(1), 1.0), rel=1e-12)


def test_logistic_regression_converges_on_many_classes_of_normalised_blocks():
    # 100 classes of L2-normalised rows: the gradient of the mean log loss at zero is below scikit-learn's usual
    # tol=1e-3, where the solver stops before its first step (chance: 1 %). The tolerance is relative to it.
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(100), 20)
    x = np.maximum(0.25 * rng.normal(size=(100, 512))[y] + rng.normal(size=(len(y), 512)), 0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    tr, te = np.arange(len(y)) % 4 != 0, np.arange(len(y)) % 4 == 0
    fixed = LogisticRegression(C=10.0, tol=1e-3).fit(x[tr], y[tr])
    assert fixed.n_iter_[0] == 0 and fixed.score(x[te], y[te]) < 0.05  # the trap this guards against
    path = solvers.logreg_path(x[tr], y[tr], x[te], [1.0, 10.0], 100)
    assert np.mean(path[-1].argmax(1) == y[te]) > 0.5
    assert solvers.fit_logreg(x[tr], y[tr], 10.0).score(x[te], y[te]) > 0.5


def test_folds_are_stratified_and_small_sets_refused():
    y = np.r_[np.zeros(10, int), np.ones(5, int)]
    folds = select.make_folds(y, "classification", 5)
    assert len(folds) == 5 and all(np.bincount(y[te], minlength=2).tolist() == [2, 1] for _, te in folds)
    with pytest.raises(ValueError, match=r"class index\(es\) \[2\] have fewer"):
        select.make_folds(np.r_[y, 2], "classification")
    reg = select.make_folds(np.arange(50.0), "regression", 5)
    assert len(reg) == 5 and all(len(np.unique(np.arange(50)[te] // 10)) == 5 for _, te in reg)


def test_shrunk_predictions_are_stretched_and_overconfidence_is_tempered():
    rng = np.random.default_rng(0)
    y = rng.normal(50, 20, 400)
    shrunk = 50 + 0.5 * (y - 50) + rng.normal(0, 2, 400)  # a regularised model's out-of-fold outputs
    cal = calibration.fit_regression_calibration(shrunk, y)
    assert cal["kind"] in ("linear", "isotonic") and cal["cv_rmse"][cal["kind"]] < 0.5 * cal["cv_rmse"]["identity"]
    fixed = calibration.apply_regression_calibration(cal, shrunk)
    assert np.std(fixed) == pytest.approx(np.std(y), rel=0.1)
    # isotonic maps keep the ranking (no ties from flat steps)
    iso = calibration.apply_regression_calibration({"kind": "isotonic", "x": [0, 1], "y": [5, 5]}, np.array([0.2, 0.8]))
    assert iso[0] < iso[1]
    labels = rng.integers(0, 3, 600)
    logits = rng.normal(0, 1, (600, 3))
    logits[np.arange(600), labels] += 1.0
    overconfident = 8 * logits
    log_probs = overconfident - np.log(np.exp(overconfident).sum(1, keepdims=True))
    t = calibration.fit_temperature(log_probs, labels)
    assert 4 < t < 16
    before = calibration.expected_calibration_error(np.exp(log_probs), labels)
    after = calibration.expected_calibration_error(calibration.apply_temperature(np.exp(log_probs), t), labels)
    assert after < before / 2


def test_temperature_stays_finite_when_every_out_of_fold_prediction_is_right():
    """A small separable set (30 per class, all out-of-fold predictions right): the plain likelihood's temperature runs
    to its lower bound (certainty); Platt's corrected targets keep the mean confidence near (N + 1) / (N + 2)."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 30)
    logits = rng.normal(0, 0.3, (90, 3))
    logits[np.arange(90), labels] += 2.0  # every row's argmax is its label
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert np.all(log_probs.argmax(1) == labels)
    t = calibration.fit_temperature(log_probs, labels)
    assert t > 0.05  # the bound is 0.005
    conf = calibration.apply_temperature(np.exp(log_probs), t).max(1).mean()
    assert 0.9 < conf < 0.995  # (30 + 1) / (30 + 2) = 0.969
    # with many items per class the correction fades: near the plain maximum-likelihood fit of the test above
    many = np.repeat(np.arange(3), 3000)
    noisy = rng.normal(0, 1, (9000, 3))
    noisy[np.arange(9000), many] += 1.0
    lp = 8 * noisy - np.log(np.exp(8 * noisy).sum(1, keepdims=True))
    assert 6 < calibration.fit_temperature(lp, many) < 10


# --- the Dense head's ensemble ------------------------------------------------------------------------------------
def _trained_weights(task, members, inits, x, y, epochs=6):
    """Weights of a head with ``members`` members started from ``inits`` (one single-head init per member) and
    trained ``epochs`` epochs on the same minibatches (HeadGraph.fit with seed 7), and its predictions."""
    from vggtransfer.models.dense import DenseHead
    from vggtransfer.models.heads import HeadSpec

    classes = ("a", "b", "c") if task == "classification" else ()
    spec = HeadSpec(task=task, hidden=(4,), l2=0.3, classes=classes, members=members)
    head = DenseHead(x.shape[1], spec)
    if members == 1:
        head.head.set_weights(head.session, inits[0])
    else:  # biases of a member layer are (M, 1, units)
        stacked = [np.stack([init[i] for init in inits]) for i in range(len(inits[0]))]
        head.head.set_weights(head.session, [v if v.ndim == 3 else v[:, None, :] for v in stacked])
    head.head.fit(head.session, x, y, epochs=epochs, patience=epochs, seed=7, batch_size=8, progress=False)
    weights, members_out, pred = (
        head.head.get_weights(head.session),
        head.session.run(head.head.end_points.get("members", head.head.output), {head.head.features: x}),
        head.predict(x),
    )
    head.close()
    return weights, members_out, pred


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_each_ensemble_member_trains_as_a_single_head_would(task):
    """Members share the minibatches but nothing else: each ends where a single head from its init ends (the loss is
    the members' mean, the L2 penalty scaled alike, Adam is scale-free); the ensemble predicts the members' mean."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = x @ rng.normal(size=6)
    y = (np.digitize(y, np.quantile(y, [1 / 3, 2 / 3])) if task == "classification" else y).astype(
        np.int64 if task == "classification" else np.float32
    )
    inits = [
        [
            rng.uniform(-0.5, 0.5, s).astype(np.float32)
            for s in ((6, 4), (4,), (4, 3 if task == "classification" else 1), (3 if task == "classification" else 1,))
        ]
        for _ in range(2)
    ]
    singles = [_trained_weights(task, 1, [init], x, y) for init in inits]
    together, members_out, pred = _trained_weights(task, 2, inits, x, y)
    for m, (alone, _, _) in enumerate(singles):
        for got, want in zip(together, alone):
            np.testing.assert_allclose(got[m].reshape(want.shape), want, rtol=1e-4, atol=1e-5)
        assert not np.allclose(alone[0], inits[m][0])  # it did train
    if task == "regression":
        np.testing.assert_allclose(pred, members_out[:, :, 0].mean(1), rtol=1e-5)
    else:
        probs = np.exp(members_out - members_out.max(2, keepdims=True))
        np.testing.assert_allclose(pred, (probs / probs.sum(2, keepdims=True)).mean(1), rtol=1e-5, atol=1e-7)


def test_the_dense_winner_is_refitted_as_an_ensemble_and_restored(scaled_npy, folder, tmp_path):
    from vggtransfer.models.auto import AutoRegressor

    ds = datasets.from_folder(folder)
    y = np.where(ds.labels == 0, 40.0, 100.0) + np.random.default_rng(0).normal(0, 3, len(ds))
    spec = FeatureSpec(end_points=("pool5",), poolings=("avg",), scales=(32,))
    model = AutoRegressor(scaled_npy, features=spec, models=("dense",), members=3, folds=3, epochs=30, precision="fp32")
    report = model.train(ds.paths, y)
    assert report.members == 3 and "3 members" in report.describe()
    assert model.dense is not None and model.dense.spec.members == 3
    pred = model.predict(ds.paths)
    assert np.sqrt(np.mean((pred - y) ** 2)) < 15
    model.save(tmp_path / "bag")
    again = AutoRegressor(scaled_npy, restore_from=tmp_path / "bag", precision="fp32")
    assert again.dense is not None and again.dense.spec.members == 3
    np.testing.assert_allclose(again.predict(ds.paths), pred, rtol=1e-6)
    with pytest.raises(ValueError, match="members must be a whole number >= 1"):
        AutoRegressor(scaled_npy, members=0)


# --- the models ---------------------------------------------------------------------------------------------------
def test_auto_classifier_trains_saves_restores_predicts(scaled_npy, folder, tmp_path):
    from vggtransfer.models.auto import AutoClassifier
    from vggtransfer.models.registry import load_model

    ds = datasets.from_folder(folder)
    spec = FeatureSpec(end_points=("pool4", "pool5"), scales=(32,))
    model = AutoClassifier(scaled_npy, features=spec, folds=3, epochs=20, precision="fp32")
    lines = []
    report = model.train_dataset(ds, log=lines.append)
    sel = report.selection
    assert sel["folds"] == 3 and sel["model"] in ("logreg", "ridge", "dense", "average") and sel["cv_mean"] > 0.9
    assert {c["group"] for c in sel["table"]} == {
        "pool5 avg",
        "pool5 avg+max",
        "pool4+pool5 avg",
        "pool4+pool5 avg+max",
    }
    assert lines[-1] == report.describe() and "3-fold CV accuracy" in lines[-1]
    assert report.calibration["temperature"] > 0
    probs = model.predict(ds.paths)
    assert probs.shape == (len(ds), 2) and np.allclose(probs.sum(1), 1)
    assert np.mean(probs.argmax(1) == ds.labels) == 1.0
    model.save(tmp_path / "m")

    def no_nan(constant):
        raise AssertionError(f"vggtransfer.json holds {constant}, which strict JSON readers refuse")

    cfg = json.loads((tmp_path / "m" / "vggtransfer.json").read_text(), parse_constant=no_nan)
    assert cfg["kind"] == "auto" and cfg["selection"]["cv_mean"] == sel["cv_mean"]
    assert any(c["loss"] is None for c in cfg["selection"]["table"])  # candidates behind the best: loss not computed
    again = load_model(tmp_path / "m", scaled_npy, precision="fp32")
    assert isinstance(again, AutoClassifier)
    np.testing.assert_allclose(again.predict(ds.paths), probs, rtol=1e-5, atol=1e-6)
    assert again.predict_top_k([ds.paths[0]], 1)[0][0][0] == ds.classes[ds.labels[0]]


def test_auto_regressor_linear_model_has_no_pickle(scaled_npy, folder, tmp_path):
    from vggtransfer.models.auto import AutoRegressor

    ds = datasets.from_folder(folder)
    y = np.where(ds.labels == 0, 40.0, 100.0) + np.random.default_rng(0).normal(0, 3, len(ds))
    model = AutoRegressor(scaled_npy, features=FeatureSpec(scales=(32,)), models=("ridge",), folds=4, precision="fp32")
    report = model.train(ds.paths, y)
    assert report.selection["model"] == "ridge" and report.calibration["kind"] in calibration.CALIBRATIONS
    pred = model.predict(ds.paths)
    assert np.sqrt(np.mean((pred - y) ** 2)) < 15
    model.save(tmp_path / "r")
    with np.load(tmp_path / "r" / "linear.npz", allow_pickle=False) as data:
        assert set(data.files) == {"coef", "intercept"}
    again = AutoRegressor(scaled_npy, restore_from=tmp_path / "r", precision="fp32")
    np.testing.assert_allclose(again.predict(ds.paths), pred, rtol=1e-6)
    with pytest.raises(ValueError, match="models for regression are"):
        AutoRegressor(scaled_npy, models=("logreg",))


def _classes_at_one_scale(spec, scale: int, per_class: int):
    """``(x, y)``: 3 classes of Gaussian noise rows of ``spec``'s width, where only the blocks at ``scale`` carry the
    class (a shift of 4 on one of their first 3 columns)."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], per_class)
    x = rng.normal(0, 1, (len(y), spec.dim("vgg16")))
    for name, a, b in spec.blocks("vgg16"):
        if name.endswith(f"@{scale}"):
            x[:, a : a + 3] += 4.0 * np.eye(3)[y]
    return x, y


def test_the_scale_is_a_cross_validated_choice():
    from vggtransfer.models.select import candidate_groups

    spec = FeatureSpec(end_points=("pool4", "pool5"), poolings=("avg",), scales=(224, 320))
    blocks = spec.blocks("vgg16")
    groups = candidate_groups(blocks)
    assert list(groups) == [
        "pool5 avg @224",
        "pool4+pool5 avg @224",
        "pool5 avg @320",
        "pool4+pool5 avg @320",
        "pool5 avg @224+320",
        "pool4+pool5 avg @224+320",
    ]
    assert groups["pool4+pool5 avg @320"] == ["pool4.avg@320", "pool5.avg@320"]
    assert (
        list(candidate_groups(FeatureSpec(end_points=("pool5",), poolings=("avg",), scales=(224,)).blocks("vgg16")))[0]
        == "pool5 avg"
    )
    # Only the 320 px blocks carry the classes: cross-validation must find that scale.
    x, y = _classes_at_one_scale(spec, 320, per_class=40)
    sel = select.select(x, y, blocks, "classification", models=("logreg",), n_classes=3, k=3)
    assert sel.best.group.endswith("@320") and sel.best.mean > 0.95, sel.best


def test_behind_is_a_paired_test_on_the_same_rows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    right = np.eye(3)[y]
    wrong = np.eye(3)[(y + 1) % 3]
    half = right.copy()
    half[:150] = wrong[:150]
    rows = np.arange(300)
    assert select.behind("classification", y, right, half, rows)  # 150 rows worse, none better
    assert not select.behind("classification", y, half, right, rows)  # better is never behind
    assert not select.behind("classification", y, right, right, rows)  # a tie is not behind
    mixed = right.copy()
    mixed[:4], mixed[-3:] = wrong[:4], wrong[-3:]
    other = right.copy()
    other[10:16] = wrong[10:16]
    assert not select.behind("classification", y, mixed, other, rows)  # 6 vs 7 errors: no evidence
    assert select.behind("classification", y, right, half, rows[:10])  # all 10 against: se 0, behind
    assert not select.behind("classification", y, right, half, rows[:9])  # fewer than 10 rows are no evidence
    t = rng.normal(0, 1, 300)
    assert select.behind("regression", t, t + 0.1 * rng.normal(size=300), t + rng.normal(size=300), rows)
    assert not select.behind("regression", t, t + rng.normal(size=300), t + rng.normal(size=300), rows)


def _spy_on_dense_heads(monkeypatch) -> list:
    """Record every Dense head fit as ``['fit', x_train, x_stop]``; a fit followed by a prediction becomes
    ``['cv', x_train, x_stop, x_predicted]`` (a fold of cross-validation: it predicts its held-out rows)."""
    from vggtransfer.models import dense as dense_module

    seen: list = []
    fit, predict = dense_module.DenseHead.fit, dense_module.DenseHead.predict

    def spy_fit(self, x_tr, y_tr, x_val=None, y_val=None, **k):
        seen.append(["fit", x_tr, x_val])
        return fit(self, x_tr, y_tr, x_val, y_val, **k)

    def spy_predict(self, x_te):
        if seen and seen[-1][0] == "fit":
            seen[-1][0] = "cv"
            seen[-1].append(np.asarray(x_te))
        return predict(self, x_te)

    monkeypatch.setattr(dense_module.DenseHead, "fit", spy_fit)
    monkeypatch.setattr(dense_module.DenseHead, "predict", spy_predict)
    return seen


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_dense_heads_cross_validation_never_fits_or_stops_on_the_rows_it_is_scored_on(
    scaled_npy, monkeypatch, task
):
    """Each fold's head trains on part of the fold's training rows and early-stops on the rest of them; the held-out
    rows are only predicted (choosing the epoch on them would flatter the head's CV score)."""
    from vggtransfer.models.auto import AutoClassifier, AutoRegressor

    spec = FeatureSpec(end_points=("pool5",), poolings=("avg",), scales=(32,))
    rng = np.random.default_rng(0)
    x = rng.gamma(1.0, 1.0, (60, spec.dim("vgg16"))).astype(np.float32)
    y = np.repeat([0, 1], 30) if task == "classification" else 10 * x[:, 0] + rng.normal(0, 1, 60)
    kw = dict(features=spec, models=("dense",), folds=3, epochs=3, l2s=(1.0,), members=1, precision="fp32")
    model = (
        AutoClassifier(scaled_npy, classes=("a", "b"), **kw)
        if task == "classification"
        else AutoRegressor(scaled_npy, **kw)
    )
    seen = _spy_on_dense_heads(monkeypatch)
    model.fit_features(x, y, model.attach().config)
    folds = [s for s in seen if s[0] == "cv" and s[2] is not None]
    assert len(folds) == 3
    for _, x_tr, x_val, x_te in folds:
        held_out = {r.tobytes() for r in x_te}
        assert len(x_tr) + len(x_val) + len(x_te) == 60 and 0.15 <= len(x_val) / (60 - len(x_te)) <= 0.25
        assert not held_out & {r.tobytes() for r in np.concatenate([x_tr, x_val])}


def test_an_image_and_its_mirror_image_train_as_two_rows_never_split_by_a_fold_and_predict_alike(
    scaled_npy, monkeypatch
):
    """With ``FeatureSpec.mirror`` each image gives two training rows (its blocks and its mirror image's), which
    cross-validation keeps on one side of every fold (a held-out photo whose mirror image trained the model would
    flatter the CV score), and the Dense head's early stopping inside a fold on one side of its split; the
    prediction averages the two views, so a row and its halves swapped predict alike."""
    from vggtransfer.models.auto import AutoClassifier

    spec = FeatureSpec(end_points=("pool5",), poolings=("avg",), scales=(32,), mirror=True)
    rng = np.random.default_rng(0)
    x = rng.gamma(1.0, 1.0, (60, spec.dim("vgg16"))).astype(np.float32)
    x[30:, :8] += 2.0
    x[30:, 512:520] += 2.0  # the class shows in both views
    y = np.repeat([0, 1], 30)
    image_of = {}
    for blocks in spec.views("vgg16"):
        for i, row in enumerate(normalise_blocks(x, blocks, 0.5)):
            image_of[row.tobytes()] = i
    kw = dict(features=spec, models=("dense",), folds=3, epochs=3, l2s=(1.0,), members=1, precision="fp32")
    model = AutoClassifier(scaled_npy, classes=("a", "b"), **kw)
    seen = _spy_on_dense_heads(monkeypatch)
    report = model.fit_features(x, y, model.attach().config)
    folds = [s for s in seen if s[0] == "cv" and s[2] is not None]
    assert len(folds) == 3
    for _, x_tr, x_val, x_te in folds:
        held_out = [image_of[r.tobytes()] for r in x_te]
        trained = {image_of[r.tobytes()] for r in np.concatenate([x_tr, x_val])}
        assert len(x_tr) + len(x_val) + len(x_te) == 120  # every image twice
        assert all(held_out.count(i) == 2 for i in held_out) and not set(held_out) & trained
        fitted, stopping = [image_of[r.tobytes()] for r in x_tr], [image_of[r.tobytes()] for r in x_val]
        assert stopping and not set(fitted) & set(stopping)  # early stopping never scores a fitted image's mirror
        assert all(fitted.count(i) == 2 for i in fitted) and all(stopping.count(i) == 2 for i in stopping)
    refit = [s for s in seen if s[0] == "fit"][-1]
    assert len(refit[1]) == 120  # the refit trains on both views of every image
    assert report.selection["rows"] == report.selection["rows_total"] == 60
    swapped = np.concatenate([x[:, 512:], x[:, :512]], axis=1)
    np.testing.assert_allclose(model.predict_features(swapped), model.predict_features(x), rtol=1e-5, atol=1e-6)
    photo_only = np.concatenate([x[:, :512], x[:, :512]], axis=1)
    assert not np.allclose(model.predict_features(photo_only), model.predict_features(x), rtol=1e-3)


def test_with_class_weights_cross_validation_scores_the_weighted_accuracy_they_ask_for():
    """90 photos of one class, 10 of the other, balanced weights: the score is the mean recall of the classes, and a
    candidate that misses the whole small class is behind one that misses 6 of the large class (unweighted it is not:
    4 rows of 100 are within the noise)."""
    from vggtransfer.data.splits import balanced_class_weights

    y = np.array([0] * 90 + [1] * 10)
    rw = balanced_class_weights(y, 2)[y]
    majority = np.eye(2)[np.zeros(100, int)]
    rows = np.arange(100)
    assert select.fold_score("classification", y, majority, rows) == 0.9
    assert select.fold_score("classification", y, majority, rows, rw) == pytest.approx(0.5)  # recalls 1 and 0
    best = np.eye(2)[y]
    best[:6] = np.eye(2)[1]  # 6 of the large class wrong
    assert not select.behind("classification", y, best, majority, rows)
    assert select.behind("classification", y, best, majority, rows, row_weights=rw)
    assert select.metric_name("classification", rw) == "class-weighted accuracy"
    assert select.metric_name("classification") == "accuracy" and select.metric_name("regression") == "rmse"
    assert select.format_estimate("class-weighted accuracy", 0.9, 0.01) == "90.00 ± 1.00 %"


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_racing_stops_a_candidate_far_behind_after_one_fold_and_never_one_that_can_win(task):
    """A Dense head trainer that is hopeless runs one fold per L2 and is never chosen; one that is best runs every
    fold and is chosen, with the same table as without racing (the logistic regression stage is raced the same
    way)."""
    rng = np.random.default_rng(1)
    spec = FeatureSpec(end_points=("pool5",), poolings=("avg",), scales=(224,))
    blocks = spec.blocks("vgg16")
    y = np.repeat(np.arange(4), 50) if task == "classification" else rng.normal(0, 1, 200)
    x = rng.normal(0, 1, (len(y), spec.dim("vgg16")))
    if task == "classification":
        x[:, :4] += 3.0 * np.eye(4)[y]
    else:
        x[:, 0] += 3 * y
    n_classes = 4 if task == "classification" else 0
    calls = []

    def trainer(good):
        def dense(x_tr, y_tr, x_te, y_te, l2, seed, groups=None):
            calls.append(l2)
            if task == "regression":
                return (y_te if good else -y_te + rng.normal(0, 1, len(y_te))), 3
            return (np.eye(4)[y_te] if good else np.eye(4)[(y_te + 1) % 4]), 3

        return dense

    kw = dict(models=None, k=5, n_classes=n_classes, dense_l2s=(0.1, 1.0), average=False)
    sel = select.select(x, y, blocks, task, dense=trainer(False), **kw)
    assert calls == [0.1, 1.0] and sel.best.model != "dense"
    raced = [c for c in sel.table if c.model == "dense"]
    assert all(c.raced and len(c.scores) == 1 and c.to_dict()["raced"] for c in raced)
    calls.clear()
    sel = select.select(x, y, blocks, task, dense=trainer(True), **kw)
    assert calls == [0.1] * 5 + [1.0] * 5 and sel.best.model == "dense" and not sel.best.raced
    assert len(sel.best.scores) == 5 and sel.best_epochs == [3] * 5


def test_racing_stops_block_groups_far_behind_after_one_fold():
    """Only the 224 px blocks carry the classes: the 320 px groups, run after them, are at chance on the first fold
    and stop there (their whole alpha path); the 224 px groups run every fold."""
    spec = FeatureSpec(end_points=("pool4", "pool5"), poolings=("avg",), scales=(224, 320))
    blocks = spec.blocks("vgg16")
    x, y = _classes_at_one_scale(spec, 224, per_class=60)
    sel = select.select(x, y, blocks, "classification", models=("ridge",), n_classes=3, k=5)
    for c in sel.table:
        if c.group.endswith(" @320"):
            assert c.raced and len(c.scores) == 1, c
        elif c.group.endswith(" @224"):
            assert not c.raced and len(c.scores) == 5, c
        else:  # the stack: the noise blocks dilute the signal; it may stop after a later fold
            assert c.raced or len(c.scores) == 5, c
    assert sel.best.group.endswith(" @224") and sel.best.mean > 0.95


def test_default_features_are_the_same_on_every_cpu(monkeypatch):
    from vggtransfer import Vgg16
    from vggtransfer.models import defaults
    from vggtransfer.models.auto import AutoClassifier, AutoRegressor

    for flags in (["amx_bf16", "avx512_bf16"], ["avx512_bf16"], []):
        monkeypatch.setattr(runtime, "cpu_bf16_flags", lambda: flags)
        for precision in ("auto", "fp32", "bf16"):
            assert AutoClassifier(None, classes=("a", "b"), precision=precision).features_spec.scales == (112, 224, 320)
            assert AutoRegressor(None, precision=precision).features_spec == defaults.FEATURES
        assert Vgg16(None).features_spec.scales == (224,)
    assert defaults.default_features() == defaults.FEATURES_CLASSES
    assert defaults.default_features("regression") == defaults.FEATURES
    assert defaults.FEATURES_CLASSES.describe() == (
        "features: pool3+pool4+pool5 avg+max, whole image at 112+224+320 px, and its mirror image"
    )


def test_precision_auto_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_bf16_flags", lambda: ["amx_bf16"])
    assert runtime.resolve_precision("auto") == "bf16"
    assert runtime.describe_precision("auto") == "precision auto: bf16 (this CPU has amx_bf16)"
    monkeypatch.setattr(runtime, "cpu_bf16_flags", lambda: [])
    assert runtime.resolve_precision("auto") == "fp32"
    assert runtime.describe_precision("auto").startswith("precision auto: fp32 (this CPU has no native bf16")
    with pytest.raises(ValueError, match="precision must be one of"):
        runtime.resolve_precision("fp16")


def test_selection_rows_are_a_stratified_sample_that_keeps_every_class_in_every_fold():
    y = np.r_[np.zeros(900, int), np.ones(90, int), np.full(10, 2)]
    assert select.selection_rows(y, "classification", 1000).tolist() == list(range(1000))
    rows = select.selection_rows(y, "classification", 100, k=5, seed=0)
    counts = np.bincount(y[rows], minlength=3)
    assert counts.tolist() == [90, 10, 10]  # 10 % of each class, but at least 2 x 5 folds (or all) of each
    assert np.all(np.diff(rows) > 0) and np.array_equal(rows, select.selection_rows(y, "classification", 100, k=5))
    targets = np.random.default_rng(0).normal(50, 20, 5000)
    rows = select.selection_rows(targets, "regression", 500, seed=1)
    assert 480 <= len(rows) <= 520 and abs(np.median(targets[rows]) - np.median(targets)) < 3
    with pytest.raises(ValueError, match="max_rows must be >= 1"):
        select.selection_rows(y, "classification", 0)


def test_large_sets_cross_validate_on_a_sample_and_refit_on_every_row(scaled_npy, tmp_path):
    """``select_rows``: CV sees the sample, the final model every row (its ridge weights are those of all rows)."""
    from vggtransfer.models.auto import AutoRegressor

    spec = FeatureSpec(end_points=("pool5",), poolings=("avg",), scales=(32,))
    model = AutoRegressor(scaled_npy, features=spec, models=("ridge",), folds=3, select_rows=60, precision="fp32")
    config = model.attach().config
    rng = np.random.default_rng(0)
    x = rng.gamma(1.0, 1.0, (200, spec.dim("vgg16"))).astype(np.float32)
    y = 10 * x[:, 0] + rng.normal(0, 0.5, 200)
    messages = []
    report = model.fit_features(x, y, config, log=messages.append)
    assert report.selection["rows"] == 60 and report.selection["rows_total"] == 200
    assert "CV rmse on 60 of 200 rows" in report.describe()
    assert any("stratified 60 of the 200 rows" in m for m in messages)
    z = normalise_blocks(x, spec.blocks("vgg16"), model.power)
    every_row = solvers.fit_ridge(z, y, report.selection["reg"])
    np.testing.assert_allclose(model.fitted["arrays"]["ridge"]["coef"], every_row["coef"], rtol=1e-5, atol=1e-8)
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "vggtransfer.json").read_text())
    assert saved["selection"]["rows"] == 60
    with pytest.raises(ValueError, match="select_rows must be a whole number >= 1"):
        AutoRegressor(scaled_npy, select_rows=0)


def test_a_class_smaller_than_the_folds_is_named_with_the_folds_it_leaves(scaled_npy):
    """A class of 3 items splits into 3 folds at most: the log says which class and how many folds, not silently;
    and classes of 20 and 3 photos are named as imbalanced, with the option that weights them equally."""
    from vggtransfer.models.auto import AutoClassifier

    spec = FeatureSpec(end_points=("pool5",), poolings=("avg",), scales=(32,))
    model = AutoClassifier(scaled_npy, features=spec, classes=("big", "wasp"), models=("ridge",), precision="fp32")
    config = model.attach().config
    rng = np.random.default_rng(0)
    y = np.array([0] * 20 + [1] * 3)
    x = rng.gamma(1.0, 1.0, (23, spec.dim("vgg16"))).astype(np.float32) + 3 * y[:, None] * (np.arange(512) < 20)
    messages = []
    report = model.fit_features(x, y, config, log=messages.append)
    assert "note: class 'wasp' has 3 training items: 3-fold cross-validation instead of 5" in messages
    assert report.selection["folds"] == 3 and "3-fold CV accuracy" in report.describe()
    quiet = []
    AutoClassifier(
        scaled_npy, features=spec, classes=("big", "wasp"), models=("ridge",), folds=3, precision="fp32"
    ).fit_features(x, y, config, log=quiet.append)
    assert not any(m.startswith("note: class") for m in quiet)
    # 20 against 3: the imbalance is named with the option that weights the classes equally, unless it was given
    imbalance = "note: the classes are imbalanced ('big' 20, 'wasp' 3)"
    assert any(m.startswith(imbalance) and "--class-weights balanced" in m for m in messages + quiet)
    with pytest.raises(ValueError, match="ridge.*takes no class weights.*add 'logreg' or 'dense'"):
        model.fit_features(x, y, config, class_weights="balanced")
    with pytest.raises(ValueError, match="takes no class weights"):  # before any image is read
        model.train(["no/such/a.jpg", "no/such/b.jpg"], ["big", "wasp"], class_weights="balanced")
    weighted = []
    logreg = AutoClassifier(scaled_npy, features=spec, classes=("big", "wasp"), models=("logreg",), precision="fp32")
    wreport = logreg.fit_features(x, y, config, log=weighted.append, class_weights="balanced")
    assert not any(m.startswith("note: the classes are imbalanced") for m in weighted)
    assert logreg.selection["metric"] == "class-weighted accuracy"
    assert (
        any("CV class-weighted accuracy" in m for m in weighted) and "CV class-weighted accuracy" in wreport.describe()
    )


def test_a_bad_weights_argument_is_refused_at_construction(tmp_path):
    """The auto models (and the card's Vgg16) load the conv weights at the first extraction; a missing file or a
    non-path is still an error at construction, naming it, as the head models' eager load gives."""
    from vggtransfer import Vgg16
    from vggtransfer.models.auto import AutoClassifier
    from vggtransfer.weights.npy import WeightsError

    for cls in (Vgg16, AutoClassifier):
        with pytest.raises(WeightsError, match="nope.npy: no such weights file"):
            cls(tmp_path / "nope.npy")
        with pytest.raises(TypeError, match="weights_path must be a path"):
            cls(123)
    assert Vgg16(None).weights_path is None  # no path: resolved (cache or download) when first needed


def test_auto_trains_and_evaluates_on_a_store_read_in_chunks_as_on_one_in_memory(
    scaled_npy, folder, tmp_path, monkeypatch
):
    """``open_store(lazy=True)`` (what ``train --store`` and ``evaluate --store`` use for auto): the features stay in
    the file and are read in chunks of rows; the fitted model and its predictions equal those from the store
    loaded into memory. A store larger than memory then needs room only for the winner's blocks."""
    from vggtransfer.data import datasets
    from vggtransfer.data.store import StoreRows, build_store, open_store
    from vggtransfer.features import spec as spec_module
    from vggtransfer.models.auto import AutoClassifier

    spec = FeatureSpec(end_points=("pool4", "pool5"), poolings=("avg", "max"), scales=(32,))
    ds = datasets.from_folder(folder, verify=False)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")  # a failed row inside the file, skipped by the reader
    names = [ds.classes[c] for c in ds.labels]
    paths = [*ds.paths[:5], tmp_path / "bad.jpg", *ds.paths[5:]]
    ds = datasets.from_paths(paths, [*names[:5], "blue", *names[5:]], ds.classes, verify=False)
    extractor = AutoClassifier(scaled_npy, features=spec, precision="fp32").attach()
    path = build_store(tmp_path / "s.h5", ds, extractor, chunk_rows=4, progress=False)
    eager, lazy = open_store(path), open_store(path, lazy=True)
    assert isinstance(lazy.features, StoreRows) and lazy.features.shape == eager.features.shape
    assert len(lazy.errors) == 1 and lazy.labels.tolist() == eager.labels.tolist()
    np.testing.assert_array_equal(lazy.features[3:9], eager.features[3:9])
    np.testing.assert_array_equal(lazy.features[np.array([7, 2, 7, 0])], eager.features[[7, 2, 7, 0]])
    np.testing.assert_array_equal(np.asarray(lazy.features), eager.features)
    outs = []
    for store in (eager, lazy):
        model = AutoClassifier(scaled_npy, features=spec, folds=3, models=("ridge", "logreg"), precision="fp32")
        if store is lazy:  # several chunks of rows, each read from the file
            monkeypatch.setattr(spec_module, "CHUNK_ROWS", 3)
        model.train_store(store, seed=0)
        outs.append((model.selection["cv_mean"], model._linear_arrays(), model.predict_store(store)))
        model.close()
    assert outs[0][0] == outs[1][0] and outs[0][1].keys() == outs[1][1].keys()
    for k in outs[0][1]:
        np.testing.assert_array_equal(outs[0][1][k], outs[1][1][k])
    np.testing.assert_array_equal(outs[0][2], outs[1][2])


def test_the_dense_heads_input_standardisation_is_the_overall_std_in_chunks():
    """The head centres its inputs and divides by their overall std, summed over chunks of rows (no float64 copy of
    a large refit set): the same value as numpy's formula, to rounding, across several chunks."""
    from vggtransfer.models.dense import DenseHead
    from vggtransfer.models.heads import HeadSpec

    x = np.random.default_rng(3).gamma(1.0, 1.0, (9000, 6)).astype(np.float32)
    with DenseHead(6, HeadSpec(task="regression", hidden=(4,), dropout=0.0, l2=1.0)) as head:
        head.head.set_standardisation(head.session, x)
        scale, mean = head.session.run([head.head.input_scale, head.head.input_mean])
    want_mean = x.mean(0, dtype=np.float64)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-6)
    assert scale == pytest.approx(1.0 / np.sqrt(np.mean((x - want_mean) ** 2)), rel=1e-6)


# --- nested cross-validation -------------------------------------------------------------------------------------
def test_nested_estimate_scores_each_outer_fold_on_rows_its_fit_never_saw():
    y = np.repeat(np.arange(3), 10)
    fitted = []

    def fit(tr):
        fitted.append(set(tr.tolist()))
        return f"fit {len(fitted)}"

    def predict(te):  # right on the even rows, wrong on the odd ones
        assert not fitted[-1] & set(te.tolist()), "a held-out row was in the fit"
        return np.where((te % 2 == 0)[:, None], np.eye(3)[y[te]], np.eye(3)[(y[te] + 1) % 3])

    lines = []
    out = nested.nested_estimate(fit, predict, y, "classification", k=5, seed=0, log=lines.append)
    assert out["folds"] == 5 and out["choices"] == [f"fit {i}" for i in range(1, 6)] and len(lines) == 5
    held_out = [set(range(30)) - f for f in fitted]
    assert sorted(r for h in held_out for r in h) == list(range(30))  # every row held out exactly once
    assert out["mean"] == pytest.approx(np.mean([np.mean([r % 2 == 0 for r in h]) for h in held_out]))
    assert out["metric"] == "accuracy" and out["std"] == pytest.approx(np.std(out["scores"]))
    t = np.arange(20.0)
    out = nested.nested_estimate(lambda tr: "", lambda te: t[te] + 2.0, t, "regression", k=4)
    assert out["metric"] == "rmse" and out["mean"] == pytest.approx(2.0) and out["folds"] == 4
    with pytest.raises(ValueError, match=r"at least 3 training items of every class.*\[1\]"):
        nested.nested_estimate(fit, predict, np.array([0, 0, 0, 1, 1, 2, 2, 2]), "classification")


def test_nested_cv_of_auto_scores_rows_that_neither_chose_nor_fitted_the_model(scaled_npy, tmp_path):
    """Labels that the features do not predict, and more features than rows: the model fitted on every row
    predicts those rows almost perfectly, so a nested estimate that let a held-out row into selection or the refit
    would be far above chance; scored on rows that neither chose nor fitted it, it is at chance. The estimate is
    saved with the model, and the final model is the plain fit on every row."""
    from vggtransfer.models.auto import AutoClassifier

    spec = FeatureSpec(end_points=("pool4", "pool5"), poolings=("avg", "max"), scales=(32,))
    kw = dict(features=spec, models=("ridge", "logreg"), folds=5, precision="fp32")
    model = AutoClassifier(scaled_npy, classes=("a", "b"), **kw)
    config = model.attach().config
    rng = np.random.default_rng(0)
    x = rng.gamma(1.0, 1.0, (80, spec.dim("vgg16"))).astype(np.float32)
    y = np.asarray(["a", "b"])[rng.permutation(np.repeat([0, 1], 40))]
    report = model.fit_features(x, y, config, nested=5)
    nested = report.selection["nested"]
    assert np.mean(model.predict_features(x).argmax(1) == (y == "b")) > 0.9  # its own rows: memorised
    assert 0.3 < nested["mean"] < 0.65 and len(nested["scores"]) == 5, nested
    assert "nested 5-fold CV accuracy of the whole procedure" in report.describe_nested()
    plain = AutoClassifier(scaled_npy, classes=("a", "b"), **kw)
    plain.fit_features(x, y, config)
    assert plain.selection["cv_mean"] == report.selection["cv_mean"]
    np.testing.assert_array_equal(plain.predict_features(x), model.predict_features(x))
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "vggtransfer.json").read_text())["selection"]["nested"]
    assert saved["scores"] == nested["scores"] and len(saved["choices"]) == 5
    assert AutoClassifier(scaled_npy, restore_from=tmp_path / "m").selection["nested"]["mean"] == nested["mean"]


def test_classes_average_each_familys_best_unless_racing_stopped_it():
    """Where the families are close, the result is the average of each family's best candidate on the chosen group,
    each calibrated by its own temperature; a family that racing stopped is left out; ``average=False`` picks."""
    rng = np.random.default_rng(3)
    spec = FeatureSpec(end_points=("pool5",), poolings=("avg",), scales=(224,))
    blocks = spec.blocks("vgg16")
    y = np.repeat(np.arange(3), 40)
    x = rng.normal(0, 1, (len(y), spec.dim("vgg16")))
    x[:, :3] += 1.5 * np.eye(3)[y]

    def dense(good):
        def train(x_tr, y_tr, x_te, y_te, l2, seed, groups=None):
            if not good:  # always a wrong class
                return np.eye(3)[(y_te + 1) % 3] * 0.97 + 0.01, 4
            scores = 2.0 * x_te[:, :3] + rng.normal(0, 1, (len(y_te), 3))
            p = np.exp(scores - scores.max(1, keepdims=True))
            return p / p.sum(1, keepdims=True), 4

        return train

    kw = dict(k=4, n_classes=3, dense_l2s=(1.0,))
    sel = select.select(x, y, blocks, "classification", dense=dense(True), **kw)
    assert sel.best.model == "average" and [p["model"] for p in sel.parts] == ["ridge", "logreg", "dense"]
    assert sel.parts[2]["epochs"] == [4] * 4 and all(p["temperature"] > 0 for p in sel.parts)
    by_model = {(c.model, c.reg): c for c in sel.table if c.group == sel.best.group and not c.raced}
    for p in sel.parts:  # each part is its family's best on the group
        family = [c for (m, _), c in by_model.items() if m == p["model"]]
        assert p["cv_mean"] == max(c.mean for c in family)
    assert np.allclose(np.exp(sel.oof).sum(1), 1) and sel.summary()["parts"] == sel.parts
    assert len(sel.best.scores) == 4 and sel.table[-1] is sel.best
    hopeless = select.select(x, y, blocks, "classification", dense=dense(False), **kw)
    assert [p["model"] for p in hopeless.parts] == ["ridge", "logreg"]
    assert [c.raced for c in hopeless.table if c.model == "dense"] == [True]
    picked = select.select(x, y, blocks, "classification", dense=dense(True), average=False, **kw)
    assert picked.best.model in ("ridge", "logreg", "dense") and not picked.parts
    only = select.select(x, y, blocks, "classification", models=("logreg",), **kw)
    assert only.best.model == "logreg" and not only.parts  # one family: nothing to average


def test_an_averaged_model_predicts_the_mean_of_its_calibrated_parts(scaled_npy, folder, tmp_path):
    from vggtransfer.models.auto import AutoClassifier
    from vggtransfer.models.calibration import apply_temperature

    spec = FeatureSpec(end_points=("pool4", "pool5"), scales=(32,))
    model = AutoClassifier(scaled_npy, features=spec, models=("ridge", "logreg"), folds=3, precision="fp32")
    ds = datasets.from_folder(folder)
    feats, ok, _ = model.attach().extract_paths(ds.paths)
    report = model.fit_features(feats, ds.labels[ok], model.attach().config)
    assert report.selection["model"] == "average" and "average of ridge (alpha" in report.describe()
    x = normalise_blocks(feats, spec.blocks("vgg16"), model.power, only=model.fitted["blocks"])
    parts = []
    for p in model.fitted["parts"]:
        a = model.fitted["arrays"][p["model"]]
        s = x.astype(np.float64) @ a["coef"].T + a["intercept"]
        parts.append(apply_temperature(np.exp(s - s.max(1, keepdims=True)), p["temperature"]))
    want = apply_temperature(np.mean(parts, 0), model.calibration["temperature"])
    np.testing.assert_allclose(model.predict_features(feats), want, rtol=1e-6, atol=1e-9)
    model.save(tmp_path / "m")
    assert "arrays" not in json.loads((tmp_path / "m" / "vggtransfer.json").read_text())["model"]
    again = AutoClassifier(scaled_npy, restore_from=tmp_path / "m", precision="fp32")
    np.testing.assert_allclose(again.predict_features(feats), want, rtol=1e-6, atol=1e-9)
