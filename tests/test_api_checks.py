"""The Python API's promises on bad input (Keras style): settings refused at construction, training arguments checked
before any image is read, classes taken from the labels, in-memory images checked for shape and pixel type (a float
image is never cast to black), and a top-k of at least 1. Each error is a ValueError naming what was wrong."""

from __future__ import annotations

import numpy as np
import pytest
from recipe_data import colour_folder

from vggtransfer.data import datasets
from vggtransfer.data.images import check_array_image, check_array_images, prepare_array
from vggtransfer.data.splits import infer_classes, training_items
from vggtransfer.features.spec import FeatureSpec

SPEC = FeatureSpec(end_points=("pool5",), poolings=("avg",), scales=(32,))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return colour_folder(tmp_path_factory.mktemp("api") / "photos", per_class=6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "fp16"}, "precision must be one of"),
        ({"hidden": (-3,)}, "hidden layer sizes must be a whole number >= 1"),
        ({"hidden": ()}, "hidden must name at least one layer size"),
        ({"dropout": 1.5}, r"dropout must be in \[0, 1\)"),
        ({"l2s": (1.0, -1.0)}, "l2 must be a finite number >= 0"),
        ({"l2s": float("nan")}, "l2 must be a finite number"),
        ({"learning_rate": 0}, "learning_rate must be a finite number > 0"),
        ({"folds": 2.5}, "folds must be a whole number >= 2"),
        ({"folds": 1}, "folds must be a whole number >= 2"),
        ({"power": 2.0}, "power must be a finite number > 0 and <= 1"),
        ({"epochs": 0}, "epochs must be a whole number >= 1"),
        ({"patience": -1}, "patience must be a whole number >= 1"),
        ({"threads": 0}, "threads must be a whole number >= 1"),
        ({"batch_size": 1.5}, "batch_size must be a whole number >= 1"),
        ({"classes": ("only",)}, "classes must be at least 2 distinct names"),
        ({"classes": ("a", "a")}, "classes must be at least 2 distinct names"),
        ({"arch": "vgg11"}, "unknown architecture 'vgg11'"),
        ({"features": FeatureSpec(end_points=("pool9",))}, "unknown end point 'pool9'"),
        ({"features": FeatureSpec(end_points=("conv5_4",)), "arch": "vgg16"}, "unknown end point 'conv5_4' for vgg16"),
    ],
)
def test_auto_models_refuse_bad_settings_at_construction(kwargs, message):
    """No weights are read (none are given): the settings alone are checked, before anything else happens."""
    from vggtransfer.models.auto import AutoClassifier

    with pytest.raises(ValueError, match=message):
        AutoClassifier(**kwargs)


def test_a_vgg19_end_point_is_accepted_where_the_arch_comes_from_the_weights():
    from vggtransfer.models.auto import AutoClassifier

    model = AutoClassifier(features=FeatureSpec(end_points=("conv5_4",)))
    assert model.features_spec.end_points == ("conv5_4",)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "half"}, "precision must be one of"),
        ({"end_point": "pool9"}, "unknown end point 'pool9'"),
        ({"dropout": 1.5}, r"dropout must be in \[0, 1\)"),
        ({"hidden": (0,)}, "hidden layer sizes must be a whole number >= 1"),
        ({"l2": -1.0}, "l2 must be a finite number >= 0"),
    ],
)
def test_the_card_model_refuses_bad_settings_at_construction(kwargs, message):
    from vggtransfer import Vgg16

    with pytest.raises(ValueError, match=message):
        Vgg16(**kwargs)


def test_training_items_are_checked_before_any_image_is_read():
    paths, y = training_items("one.jpg", [3.0])
    assert paths == ["one.jpg"] and y.tolist() == [3.0]  # one path is one item, never its characters
    paths, y = training_items(["a.jpg", "b.jpg"], np.array([[1.0], [2.0]]))  # a column, as scikit-learn takes it
    assert y.shape == (2,)
    with pytest.raises(ValueError, match="no training images: image_paths is empty"):
        training_items([], [])
    with pytest.raises(ValueError, match=r"targets must be one value per image \(a 1-D sequence\), got shape \(2, 2\)"):
        training_items(["a.jpg", "b.jpg"], np.ones((2, 2)))
    with pytest.raises(ValueError, match="2 image paths but 3 targets"):
        training_items(["a.jpg", "b.jpg"], [1, 2, 3])


def test_classes_are_inferred_sorted_like_scikit_learn():
    assert infer_classes(["cat", "tiger", "cat"]) == ("cat", "tiger")
    assert infer_classes([10, 2, 2]) == ("2", "10")  # numbers sort numerically
    with pytest.raises(ValueError, match=r"at least 2 classes; the labels hold \['x'\]"):
        infer_classes(["x", "x"])


def test_bad_targets_fail_before_the_weights_are_read(folder, tmp_path):
    """The weights file lacks every layer but the first (its header is sound, so the model is built; it would fail
    at the first extraction): a target error must come first, so no time is spent extracting."""
    from conftest import random_weights

    from vggtransfer import Vgg16
    from vggtransfer.models.auto import AutoClassifier
    from vggtransfer.weights.npy import WeightsError, save_weights

    bogus = save_weights(random_weights("vgg16", layers=["conv1_1"]), tmp_path / "bogus.npy")
    ds = datasets.from_folder(folder)
    with pytest.raises(ValueError, match="targets must be finite numbers; rows \\[1\\]"):
        Vgg16(bogus).train(ds.paths[:4], [1.0, np.nan, 2.0, 3.0])
    with pytest.raises(ValueError, match="regression targets must be numbers"):
        Vgg16(bogus).train(ds.paths[:2], ["long", "short"])
    with pytest.raises(ValueError, match="a classifier needs at least 2 classes"):
        AutoClassifier(bogus).train(ds.paths[:3], ["a", "a", "a"])
    with pytest.raises(ValueError, match="unknown labels at rows \\[1\\]"):
        AutoClassifier(bogus, classes=("blue", "red")).train(ds.paths[:2], ["red", "green"])
    with pytest.raises(WeightsError, match="layer conv1_2 is missing"):  # the weights were never read before
        AutoClassifier(bogus, classes=("blue", "red")).train(ds.paths[:4], ["red", "blue"] * 2)
    (tmp_path / "notes.npy").write_bytes(b"not weights")  # no weights file at all: named when the model is built
    with pytest.raises(WeightsError, match="notes.npy: not a .npy file"):
        Vgg16(tmp_path / "notes.npy")


def test_an_auto_classifier_takes_its_classes_from_the_labels_of_each_training_call(scaled_npy, folder, tmp_path):
    from vggtransfer import load_model
    from vggtransfer.models.auto import AutoClassifier

    ds = datasets.from_folder(folder)
    names = [ds.classes[i] for i in ds.labels]
    model = AutoClassifier(scaled_npy, features=SPEC, models=("ridge",), folds=3, precision="fp32")
    model.train(ds.paths, names)
    assert model.classes == ("blue", "red")
    assert model.predict_labels(ds.paths) == names  # colours are separable even by random conv weights
    # numbers name classes too, in numeric order; the names of the first call are not kept
    model.train(ds.paths, np.where(ds.labels == 0, 10, 2))
    assert model.classes == ("2", "10")
    assert model.predict(ds.paths).shape == (len(ds), 2)
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m", scaled_npy, precision="fp32")
    assert again.classes == ("2", "10")
    np.testing.assert_allclose(again.predict(ds.paths), model.predict(ds.paths), rtol=1e-6)
    with pytest.raises(ValueError, match="k must be a whole number >= 1, got 0"):
        model.predict_top_k(ds.paths[:1], k=0)
    from vggtransfer import ModelError, VggClassifier

    with pytest.raises(ModelError, match=r"the model's classes are \('2', '10'\), not the classes= given"):
        AutoClassifier(scaled_npy, restore_from=tmp_path / "m", classes=("red", "blue"))
    with pytest.raises(ModelError, match="a saved 'auto' model, which this class does not restore; vggtransfer.load_"):
        VggClassifier(scaled_npy, restore_from=tmp_path / "m")  # was: "field 'end_point' is missing"


def test_in_memory_images_are_checked_never_cast(scaled_npy, folder):
    """A float image in [0, 1] cast to uint8 would be black: refused, with the conversion to use."""
    from vggtransfer.models.auto import AutoClassifier

    img = np.random.default_rng(0).integers(0, 256, (40, 48, 3)).astype(np.uint8)
    np.testing.assert_array_equal(check_array_image(img.astype(np.int64)), img)  # whole numbers 0-255 are fine
    np.testing.assert_array_equal(prepare_array(img.astype(np.int32), 32), prepare_array(img, 32))
    with pytest.raises(ValueError, match=r"image: pixels are float32; expected uint8 0-255 \(for floats in \[0, 1\]"):
        check_array_image(img.astype(np.float32) / 255)
    with pytest.raises(ValueError, match="integer pixels must be 0-255, got 0..300"):
        check_array_image(np.array([[[0, 300, 1]]]))
    with pytest.raises(ValueError, match=r"expected an RGB image of shape \(h, w, 3\), got shape \(40, 48\)"):
        check_array_image(img[:, :, 0])
    with pytest.raises(ValueError, match=r"got one image \(40, 48, 3\); pass arrays\[None\]"):
        check_array_images(img)
    with pytest.raises(ValueError, match=r"arrays\[1\]: pixels are float64"):
        check_array_images([img, img / 255.0])
    assert len(check_array_images([img, img[:32, :32]])) == 2  # a list may hold images of different sizes

    ds = datasets.from_folder(folder)
    model = AutoClassifier(scaled_npy, features=SPEC, models=("ridge",), folds=3, precision="fp32")
    model.train(ds.paths, [ds.classes[i] for i in ds.labels])
    with pytest.raises(ValueError, match=r"arrays\[0\]: pixels are float32"):
        model.predict_arrays(img[None].astype(np.float32) / 255)
    assert model.predict_arrays([img, img[:32, :32]]).shape == (2, 2)


def test_head_and_fine_tuning_models_refuse_bad_rates_before_reading_weights(tmp_path):
    from vggtransfer import VggClassifier
    from vggtransfer.models.finetune import FineTunedClassifier

    missing = tmp_path / "none.npy"  # never read: the settings fail first
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0, got 0"):
        VggClassifier(missing, classes=("a", "b"), learning_rate=0)
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0, got -1"):
        FineTunedClassifier(missing, classes=("a", "b"), learning_rate=-1)
    with pytest.raises(ValueError, match="backbone_learning_rate must be a finite number >= 0"):
        FineTunedClassifier(missing, classes=("a", "b"), backbone_learning_rate=float("inf"))
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1, got 0"):
        FineTunedClassifier(missing, classes=("a", "b"), batch_size=0)


def test_download_images_takes_one_url_as_one_and_names_a_bad_folder_or_option(tmp_path):
    from vggtransfer import download_images

    summary = download_images("http://127.0.0.1:9/a.jpg", tmp_path / "one", progress=False, resolve_first=False)
    assert summary.total == 1  # one URL, never its 24 characters
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(ValueError, match="notes.txt: exists and is not a folder"):
        download_images(["http://127.0.0.1:9/a.jpg"], a_file, progress=False)
    assert a_file.read_text() == "mine"
    with pytest.raises(TypeError, match="unknown download option.s. colour; known: workers"):
        download_images(["http://127.0.0.1:9/a.jpg"], tmp_path / "x", progress=False, colour=1)


def test_resolve_weights_names_an_unknown_architecture_before_looking_anywhere(tmp_path, monkeypatch):
    from vggtransfer import resolve_weights

    monkeypatch.setenv("VGGTRANSFER_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="unknown architecture 'vgg11'; expected one of vgg16, vgg19"):
        resolve_weights(None, arch="vgg11")


def test_path_arguments_take_any_path_like_and_name_what_is_not_one(tmp_path):
    from pathlib import Path

    from vggtransfer.data.images import path_list

    assert path_list("a.jpg") == (["a.jpg"], True)
    assert path_list(Path("a.jpg")) == (["a.jpg"], True)
    assert path_list(b"a.jpg") == (["a.jpg"], True)
    assert path_list(p for p in ("a.jpg", Path("b.png"))) == (["a.jpg", "b.png"], False)  # any iterable
    with pytest.raises(TypeError, match="image_paths must be a path or a list of paths .* got NoneType"):
        path_list(None)
    with pytest.raises(TypeError, match=r"image_paths\[1\] must be a path .* got int"):
        path_list(["a.jpg", 5])
    with pytest.raises(TypeError, match=r"image_paths\[0\] must be a path"):
        training_items([None], [1.0])


def test_auto_training_names_a_class_with_one_item_and_non_finite_rows(scaled_npy):
    from vggtransfer.models.auto import AutoClassifier

    model = AutoClassifier(scaled_npy, features=SPEC, models=("ridge",), precision="fp32")
    x = np.abs(np.random.default_rng(0).normal(size=(9, 512))).astype(np.float32)
    with pytest.raises(ValueError, match=r"class\(es\) \['lone'\] have fewer than 2 training items"):
        model.train_on_features(x, ["a"] * 4 + ["b"] * 4 + ["lone"])
    x[3, 7] = np.nan
    with pytest.raises(ValueError, match=r"1 training feature row\(s\) hold NaN or inf \(the first: row 3\)"):
        model.train_on_features(x, ["a"] * 5 + ["b"] * 4)


def test_an_explicit_pixel_cap_below_one_is_refused():
    """A cap of -1 built an export where every image was 'not valid', and made every file unreadable."""
    from vggtransfer.data.images import max_pixels_limit

    assert max_pixels_limit(1000) == 1000
    for bad in (0, -1, 1.5e300, True, "many"):
        with pytest.raises(ValueError, match="max_pixels must be a whole number of pixels >= 1"):
            max_pixels_limit(bad)
