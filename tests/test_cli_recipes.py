"""The recipe CLI: extract -> train (head / linear / regressor) -> evaluate -> predict, and its error reporting."""

from __future__ import annotations

import json

import numpy as np
import pytest
from recipe_data import colour_folder

from vggtransfer.cli import main


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return colour_folder(tmp_path_factory.mktemp("cli") / "data", per_class=8)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_names_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("extract", "train", "evaluate", "predict"):
        assert cmd in out


def _train_dense_ensemble(capsys, monkeypatch, tmp_path, scaled_npy):
    """``train --members 2`` with auto's candidates narrowed to the Dense head (so that it wins)."""
    from vggtransfer.models import select

    monkeypatch.setitem(select.MODELS, "classification", ("dense",))
    return run(
        capsys,
        *("train", "--store", tmp_path / "s.h5", "--model", tmp_path / "bag", "--folds", 3, "--members", 2),
        *("--l2", 1, "--epochs", 5, "--weights", scaled_npy),
    )


def test_extract_train_evaluate_predict(capsys, scaled_npy, folder, tmp_path, monkeypatch):
    feats = ["--weights", scaled_npy, "--image-size", 32]
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    code, out, err = run(capsys, "extract", folder, "--store", tmp_path / "s.h5", "--pooling", "max", *feats)
    assert code == 0 and "16/16" in out, err
    code, out, err = run(
        capsys,
        "train",
        "--store",
        tmp_path / "s.h5",
        "--model",
        tmp_path / "clf",
        "--hidden",
        16,
        "--learning-rate",
        0.01,
        "--epochs",
        60,
        "--weights",
        scaled_npy,
        "--recipe",
        "head",
    )
    assert code == 0 and "validation accuracy" in out, err
    code, out, err = run(
        capsys,
        "train",
        "--store",
        tmp_path / "s.h5",
        "--model",
        tmp_path / "auto",
        "--folds",
        3,
        "--weights",
        scaled_npy,
    )
    assert code == 0 and "3-fold CV accuracy" in out and "chose pool5 max" in out, err
    code, out, err = run(
        capsys,
        *("train", "--store", tmp_path / "s.h5", "--model", tmp_path / "sampled", "--folds", 3, "--select-rows", 12),
        *("--weights", scaled_npy),
    )
    saved = json.loads((tmp_path / "sampled" / "vggtransfer.json").read_text())["selection"]
    assert code == 0 and "3-fold CV accuracy on 12 of 16 rows" in out, err
    assert (saved["rows"], saved["rows_total"]) == (12, 16)
    code, out, err = run(
        capsys,
        *("train", "--store", tmp_path / "s.h5", "--model", tmp_path / "no", "--recipe", "linear"),
        *("--select-rows", 12, "--weights", scaled_npy),
    )
    assert code == 2 and "--select-rows: applies to --recipe auto only" in err
    code, out, err = _train_dense_ensemble(capsys, monkeypatch, tmp_path, scaled_npy)
    saved = json.loads((tmp_path / "bag" / "vggtransfer.json").read_text())
    assert code == 0 and "dense (L2 1, 2 members)" in out, err
    assert saved["head"]["members"] == 2 and saved["model"]["members"] == 2
    code, out, err = run(
        capsys,
        "train",
        "--store",
        tmp_path / "s.h5",
        "--recipe",
        "linear",
        "--model",
        tmp_path / "lin",
        "--weights",
        scaled_npy,
    )
    assert code == 0 and "logistic regression" in out, err
    img = folder / "red" / "00.jpg"
    for model in ("clf", "lin", "auto"):
        code, out, err = run(
            capsys, "predict", "--model", tmp_path / model, img, bad, "--top-k", 2, "--weights", scaled_npy
        )
        assert code == 1
        lines = out.strip().splitlines()
        assert len(lines) == 2 and lines[0].startswith(f"{img}\tred\t") and lines[1].startswith(f"{img}\tblue\t")
        assert err.strip().startswith(f"{bad}\terror: ")
        code, out, _ = run(capsys, "predict", "--model", tmp_path / model, img, bad, "--json", "--weights", scaled_npy)
        rows = json.loads(out)
        assert code == 1 and rows[0]["top_k"][0]["class"] == "red" and rows[1]["error"] and rows[1]["top_k"] is None
    code, out, err = run(
        capsys, "evaluate", "--model", tmp_path / "lin", folder, "--png", tmp_path / "cm.png", "--weights", scaled_npy
    )
    assert code == 0 and "accuracy" in out and (tmp_path / "cm.png").is_file(), err
    # A test folder may hold some of the model's classes (matched by name); a class the model lacks is named.
    only_red, unknown = tmp_path / "only_red", tmp_path / "unknown"
    for root, name in ((only_red, "red"), (unknown, "green")):
        (root / name).mkdir(parents=True)
        for f in sorted((folder / "red").iterdir()):
            (root / name / f.name).write_bytes(f.read_bytes())
    code, out, err = run(capsys, "evaluate", "--model", tmp_path / "lin", only_red, "--json", "--weights", scaled_npy)
    res = json.loads(out)
    assert code == 0 and res["n"] == 8 and np.asarray(res["confusion"])[0].sum() == 0, err  # row 0: blue, absent
    assert np.asarray(res["confusion"])[1].sum() == 8 and res["accuracy"] > 0.5
    code, out, err = run(capsys, "evaluate", "--model", tmp_path / "lin", unknown, "--weights", scaled_npy)
    assert code == 2 and "'green' are not among the model's classes (blue, red)" in err and "Traceback" not in err
    code, out, err = run(
        capsys, "evaluate", "--model", tmp_path / "clf", "--store", tmp_path / "s.h5", "--json", "--weights", scaled_npy
    )
    assert code == 0 and json.loads(out)["n"] == 16, err
    code, out, err = run(
        capsys,
        "evaluate",
        "--model",
        tmp_path / "auto",
        "--store",
        tmp_path / "s.h5",
        "--json",
        "--weights",
        scaled_npy,
    )
    res = json.loads(out)
    assert code == 0 and res["n"] == 16 and res["folds"] == 3 and 0 <= res["ece"] <= 1 and "cv_mean" in res, err
    cm = np.asarray(res["confusion"])
    present = cm.sum(1) > 0
    assert res["mean_class_recall"] == pytest.approx(np.mean(np.diag(cm)[present] / cm.sum(1)[present]))
    from vggtransfer.data.store import open_store
    from vggtransfer.models.registry import load_model

    store = open_store(tmp_path / "s.h5")
    probs, y = load_model(tmp_path / "auto", scaled_npy).predict_store(store, "s.h5"), store.labels.astype(int)
    assert res["log_loss"] == pytest.approx(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-15, 1))), rel=1e-6)


def test_regressor_from_csv_predicts_values(capsys, scaled_npy, folder, tmp_path):
    csv = tmp_path / "t.csv"
    rows = [f"{p},{1.0 if 'red' in str(p) else 3.0}" for p in sorted(folder.rglob("*.*"))]
    csv.write_text("path,target\n" + "\n".join(rows) + "\n")
    code, out, err = run(
        capsys,
        "train",
        "--data",
        csv,
        "--task",
        "regression",
        "--model",
        tmp_path / "reg",
        "--weights",
        scaled_npy,
        "--image-size",
        32,
        "--hidden",
        8,
        "--epochs",
        20,
    )
    assert code == 0 and "5-fold CV rmse" in out, err
    images = [folder / "red" / "00.jpg", folder / "blue" / "00.jpg"]
    code, out, err = run(capsys, "predict", "--model", tmp_path / "reg", *images, "--weights", scaled_npy)
    rows = [line.split("\t") for line in out.strip().splitlines()]
    assert code == 0 and [r[0] for r in rows] == [str(p) for p in images], err
    red, blue = (float(r[1]) for r in rows)
    assert red < blue  # red photos were given 1.0, blue ones 3.0
    # bf16 (or fp32 with a warning where the CPU has no bf16) predicts nearly the same values
    code, out, err = run(
        capsys,
        "predict",
        "--model",
        tmp_path / "reg",
        *images,
        "--weights",
        scaled_npy,
        "--precision",
        "bf16",
        "--threads",
        1,
    )
    assert code == 0, err
    bf16 = [float(line.split("\t")[1]) for line in out.strip().splitlines()]
    assert bf16 == pytest.approx([red, blue], abs=0.1 * (blue - red))
    # fine-tuning has no bf16 mode: a clear error, not a traceback
    code, out, err = run(
        capsys,
        "train",
        "--data",
        folder,
        "--recipe",
        "finetune",
        "--precision",
        "bf16",
        "--model",
        tmp_path / "ft",
        "--weights",
        scaled_npy,
        "--image-size",
        32,
    )
    assert code == 2 and "fine-tuning trains in fp32" in err


def test_errors_are_one_line_exit_2(capsys, scaled_npy, tmp_path):
    code, out, err = run(capsys, "train", "--data", tmp_path / "nope", "--model", tmp_path / "m")
    assert code == 2 and err.startswith("error: ") and "nope" in err and "Traceback" not in err
    code, out, err = run(capsys, "predict", "--model", tmp_path / "none", "x.jpg")
    assert code == 2 and "error:" in err and "none" in err
    (tmp_path / "empty").mkdir()
    code, out, err = run(capsys, "extract", tmp_path / "empty", "--store", tmp_path / "s.h5", "--weights", scaled_npy)
    assert code == 2 and "no class folders" in err
    splits = tmp_path / "splits"  # a root of split folders: the error names the split to give, nothing is written
    colour_folder(splits / "train", per_class=2)
    colour_folder(splits / "val", per_class=2)
    code, out, err = run(capsys, "train", "--data", splits, "--model", tmp_path / "sm", "--weights", scaled_npy)
    assert code == 2 and f"give one split, e.g. {splits / 'train'}" in err and "Traceback" not in err
    assert not (tmp_path / "sm").exists()
    grey = tmp_path / "grey.h5"  # an h5 written by another tool: grey images, float labels, no list_classes
    import h5py

    with h5py.File(grey, "w") as fh:
        fh["train_set_x"] = np.zeros((4, 32, 32), np.uint8)
        fh["train_set_y"] = np.array([0.0, 1.0, 1.5, 1.0])
    code, out, err = run(
        capsys, "extract", grey, "--store", tmp_path / "g.h5", "--image-size", 32, "--weights", scaled_npy
    )
    assert code == 0 and "grey.h5:train_set_y[2]" in err and "label 1.5 is not a class index 0..1" in err, err


def test_train_and_extract_say_which_block_features_they_compute(capsys, monkeypatch, scaled_npy, folder, tmp_path):
    from vggtransfer.cli import common

    monkeypatch.setattr(common, "_ANNOUNCED", set())
    code, out, err = run(
        capsys, "extract", folder, "--store", tmp_path / "s.h5", "--weights", scaled_npy, "--scales", 32
    )
    assert code == 0 and "features: pool3+pool4+pool5 avg+max, whole image at 32 px, and its mirror image\n" in err, err
    monkeypatch.setattr(common, "_ANNOUNCED", set())
    code, out, err = run(
        capsys,
        "train",
        "--data",
        folder,
        "--model",
        tmp_path / "m",
        "--weights",
        scaled_npy,
        "--scales",
        "32,48",
        "--folds",
        2,
        "--epochs",
        2,
    )
    assert (
        code == 0 and "features: pool3+pool4+pool5 avg+max, whole image at 32+48 px, and its mirror image\n" in err
    ), err
    assert "@32" in out or "@48" in out, out  # the chosen group names its scale


def test_extract_resumable_continues_a_killed_extraction_and_replaces_a_stale_cache(scaled_npy, folder, tmp_path):
    from vggtransfer.data import datasets
    from vggtransfer.data.store import build_store, extract_resumable
    from vggtransfer.features.blocks import BlockExtractor
    from vggtransfer.features.spec import FeatureSpec

    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    good = datasets.from_folder(folder)
    ds = datasets.Dataset([*good.paths[:5], str(bad), *good.paths[5:]], np.r_[good.labels[:5], 0, good.labels[5:]])
    fx = BlockExtractor(scaled_npy, FeatureSpec(end_points=("pool5",), scales=(32,)), precision="fp32")
    want, want_ok, want_errors = fx.extract_paths(ds.paths)
    cache = tmp_path / "cache" / "train.h5"
    build_store(cache, ds, fx, chunk_rows=4, stop_after=8)  # what a kill after two flushed chunks leaves
    feats, ok, errors, resumed = extract_resumable(cache, ds, fx, chunk_rows=4)
    assert resumed == 8 and ok == want_ok and [str(e) for e in errors] == [str(e) for e in want_errors]
    np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-6)
    # a cache of other items (the folder changed between runs) is not an error: it is replaced
    fewer = datasets.Dataset(good.paths[:6], good.labels[:6])
    said: list = []
    feats, ok, errors, resumed = extract_resumable(cache, fewer, fx, chunk_rows=4, log=said.append)
    assert resumed == 0 and ok == list(range(6)) and not errors
    assert said == [f"{cache}: an earlier run's features, of other images or settings: extracting again"]
    np.testing.assert_allclose(feats, fx.extract_paths(fewer.paths)[0], rtol=1e-5, atol=1e-6)


def test_train_data_killed_after_extraction_continues_from_its_features(
    capsys, scaled_npy, folder, tmp_path, monkeypatch
):
    """``train --data`` keeps its features beside --model until the model is saved: Ctrl-C (or a kill) during
    selection, then the same command, extracts nothing again and trains the same model; the cache is then removed."""
    from vggtransfer.models.auto import AutoModel

    args = ("train", "--data", folder, "--weights", scaled_npy, "--scales", 32, "--folds", 3, "--precision", "fp32")
    real_fit = AutoModel.fit_features

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(AutoModel, "fit_features", interrupted)
    code, out, err = run(capsys, *args, "--model", tmp_path / "m")
    assert code == 130 and "continues the features already extracted" in err
    assert (tmp_path / ".m.features" / "train.h5").is_file() and not (tmp_path / "m").exists()
    calls = []
    monkeypatch.setattr(AutoModel, "fit_features", lambda self, *a, **k: calls.append(1) or real_fit(self, *a, **k))
    from vggtransfer.features.blocks import BlockExtractor

    real_views = BlockExtractor.iter_views

    def no_new_rows(self, items, *a, **k):
        assert not list(items), "extracted again"
        return real_views(self, items, *a, **k)

    monkeypatch.setattr(BlockExtractor, "iter_views", no_new_rows)
    code, out, err = run(capsys, *args, "--model", tmp_path / "m")
    assert code == 0, err
    assert "continuing the features of an earlier run: 16 of 16 images done" in err and calls == [1]
    assert (tmp_path / "m" / "vggtransfer.json").is_file() and not (tmp_path / ".m.features").exists()
    monkeypatch.undo()
    code, out, err = run(capsys, *args, "--model", tmp_path / "fresh")
    assert code == 0 and "continuing" not in err
    resumed, fresh = (json.loads((tmp_path / m / "vggtransfer.json").read_text()) for m in ("m", "fresh"))
    for saved in (resumed, fresh):
        saved["selection"].pop("seconds")
    assert resumed["selection"] == fresh["selection"] and resumed["model"] == fresh["model"]


def test_train_on_an_h5_data_set_through_the_feature_cache(capsys, scaled_npy, tmp_path):
    """In-memory images (a SIGNS-style .h5) take the same resumable route as files, for auto and for the head
    recipe with an .h5 --val-data; the cache is gone once the model is saved, and the model is the one the library
    trains without a cache."""
    from recipe_data import colour_h5

    from vggtransfer.data import datasets
    from vggtransfer.features.spec import FeatureSpec
    from vggtransfer.models.auto import AutoClassifier

    train = colour_h5(tmp_path / "train.h5", 6)
    val = colour_h5(tmp_path / "val.h5", 3, split="test", seed=1)
    common = ("--weights", scaled_npy, "--precision", "fp32")
    code, out, err = run(
        capsys, "train", "--data", train, "--model", tmp_path / "auto", "--scales", 32, "--folds", 3, *common
    )
    assert code == 0, err
    code, out, err = run(
        capsys,
        *("train", "--data", train, "--model", tmp_path / "head", "--recipe", "head", "--image-size", 32),
        *("--val-data", val, "--epochs", 3, *common),
    )
    assert code == 0, err
    assert not list(tmp_path.glob(".*.features"))
    direct = AutoClassifier(scaled_npy, features=FeatureSpec(scales=(32,)), folds=3, precision="fp32").train_dataset(
        datasets.from_signs_h5(train)
    )
    saved = json.loads((tmp_path / "auto" / "vggtransfer.json").read_text())["selection"]
    assert (saved["group"], saved["model"], saved["reg"]) == (
        direct.selection["group"],
        direct.selection["model"],
        direct.selection["reg"],
    )


def test_file_names_with_tabs_newlines_and_undecodable_bytes(capsys, scaled_npy, folder, tmp_path):
    """Names a file system allows: a tab and a newline broke predict's one-line-per-image output, and a name that
    is not UTF-8 (bytes from another system) failed extract, train --data and --out CSV with "surrogates not
    allowed" after the work was done."""
    import os
    import shutil

    data = tmp_path / "data"
    shutil.copytree(folder, data)
    src = sorted((data / "red").iterdir())
    odd = [
        str(data / "red" / "a\ttab.png"),
        str(data / "red" / "new\nline.png"),
        os.fsdecode(bytes(data / "red") + b"/bad\xff.png"),
    ]
    for old, new in zip(src, odd):
        os.rename(old, new)
    feats = ("--weights", scaled_npy, "--scales", 32, "--precision", "fp32")
    code, out, err = run(capsys, "extract", data, "--store", tmp_path / "s.h5", *feats)
    assert code == 0 and "16/16" in out, err
    from vggtransfer.data.store import open_store

    assert set(odd) <= set(open_store(tmp_path / "s.h5").paths)  # the names read back as they are on disk
    code, out, err = run(capsys, "train", "--data", data, "--model", tmp_path / "m", "--folds", 3, *feats)
    assert code == 0, err
    code, out, err = run(capsys, "predict", "--model", tmp_path / "m", data, *feats[:2])
    assert code == 0 and len(out.splitlines()) == 16, err  # one line per image
    assert f"{data}/red/a\\ttab.png\tred\t" in out and f"{data}/red/new\\nline.png\tred\t" in out
    assert f"{data}/red/bad\\xff.png\tred\t" in out
    code, out, err = run(capsys, "predict", "--model", tmp_path / "m", data, *feats[:2], "--out", tmp_path / "r.csv")
    assert code == 0, err
    assert b"/bad\xff.png" in (tmp_path / "r.csv").read_bytes()


def test_nested_cv_estimates_the_whole_procedure_and_evaluate_shows_it(capsys, scaled_npy, folder, tmp_path):
    """``train --nested-cv``: the outer folds' estimate is printed, saved beside the winner's CV score and shown by
    ``evaluate``; other recipes refuse the option."""
    code, out, err = run(capsys, "extract", folder, "--store", tmp_path / "s.h5", "--weights", scaled_npy)
    assert code == 0, err
    code, out, err = run(
        capsys,
        *("train", "--store", tmp_path / "s.h5", "--model", tmp_path / "m", "--folds", 3, "--nested-cv"),
        *("--weights", scaled_npy),
    )
    assert code == 0 and "nested 3-fold CV accuracy of the whole procedure" in out, err
    nested = json.loads((tmp_path / "m" / "vggtransfer.json").read_text())["selection"]["nested"]
    assert nested["folds"] == 3 and len(nested["scores"]) == 3 and len(nested["choices"]) == 3
    assert all(c.startswith("chose ") for c in nested["choices"])
    code, out, err = run(capsys, "evaluate", "--model", tmp_path / "m", folder, "--weights", scaled_npy)
    assert code == 0 and "nested cross-validated estimate of the whole procedure: accuracy" in out, err
    assert f"{100 * nested['mean']:.2f} ± {100 * nested['std']:.2f} % (3 outer folds)" in out
    code, out, err = run(capsys, "evaluate", "--model", tmp_path / "m", folder, "--json", "--weights", scaled_npy)
    shown = json.loads(out)
    assert code == 0 and shown["nested_mean"] == nested["mean"] and shown["nested_folds"] == 3
    code, out, err = run(
        capsys,
        *("train", "--store", tmp_path / "s.h5", "--model", tmp_path / "no", "--recipe", "linear", "--nested-cv"),
        *("--weights", scaled_npy),
    )
    assert code == 2 and "--nested-cv: applies to --recipe auto only" in err


def test_nested_cv_with_a_class_too_small_for_it_names_the_class(capsys, scaled_npy, folder, tmp_path):
    """Two photos of a class are enough to train (2-fold CV) but not for nested CV: one line naming the class and
    what is needed, exit 2, no model written."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(folder, data)
    for extra in sorted((data / "blue").iterdir())[2:]:
        extra.unlink()
    code, out, err = run(
        capsys,
        *("train", "--data", data, "--model", tmp_path / "m", "--nested-cv", "--scales", 32),
        *("--weights", scaled_npy, "--precision", "fp32"),
    )
    assert code == 2 and "Traceback" not in err, err
    assert "nested cross-validation needs at least 3 training items of every class" in err and "['blue']" in err
    assert not (tmp_path / "m").exists()


def test_class_weights_balanced_is_named_for_imbalanced_classes_and_cross_validates_what_it_asks_for(
    capsys, scaled_npy, tmp_path
):
    """12 blue photos, 3 red: without weights `train` says so and names `--class-weights balanced`; with it, the CV
    scores the class-weighted accuracy (the mean recall of the classes), and `evaluate` names that estimate."""
    data = colour_folder(tmp_path / "data", per_class=12)
    for extra in sorted((data / "red").iterdir())[3:]:
        extra.unlink()
    common = ("--data", data, "--weights", scaled_npy, "--folds", 3, "--epochs", 5)
    code, out, err = run(capsys, "train", *common, "--model", tmp_path / "plain")
    assert code == 0 and "note: the classes are imbalanced ('blue' 12, 'red' 3)" in err, err
    assert "--class-weights balanced" in err and "3-fold CV accuracy" in out
    code, out, err = run(capsys, "train", *common, "--model", tmp_path / "eq", "--class-weights", "balanced")
    assert code == 0 and "imbalanced" not in out + err and "3-fold CV class-weighted accuracy" in out, err
    code, out, err = run(capsys, "evaluate", "--data", data, "--model", tmp_path / "eq", "--weights", scaled_npy)
    assert code == 0 and "cross-validated estimate at training: class-weighted accuracy" in out, err
    code, out, err = run(
        capsys, "evaluate", "--data", data, "--model", tmp_path / "eq", "--weights", scaled_npy, "--json"
    )
    assert json.loads(out)["cv_metric"] == "class-weighted accuracy", err


def test_mirror_option_keeps_or_drops_the_mirror_image(capsys, monkeypatch, scaled_npy, folder, tmp_path):
    """--mirror yes|no sets whether the block features keep each image's mirror image (classes: yes by default,
    targets: no); it cannot go with --flip yes, with a one-block recipe, or with a store (whose features are fixed)."""
    from vggtransfer.cli import common

    base = ["--weights", scaled_npy, "--scales", 32]
    monkeypatch.setattr(common, "_ANNOUNCED", set())
    code, out, err = run(capsys, "extract", folder, "--store", tmp_path / "no.h5", "--mirror", "no", *base)
    assert code == 0 and "whole image at 32 px\n" in err, err
    monkeypatch.setattr(common, "_ANNOUNCED", set())
    code, out, err = run(capsys, "extract", folder, "--store", tmp_path / "yes.h5", "--mirror", "yes", *base)
    assert code == 0 and "whole image at 32 px, and its mirror image\n" in err, err
    import h5py

    with h5py.File(tmp_path / "no.h5", "r") as a, h5py.File(tmp_path / "yes.h5", "r") as b:
        narrow, wide = a["features"][()], b["features"][()]
    assert wide.shape == (narrow.shape[0], 2 * narrow.shape[1])
    np.testing.assert_allclose(wide[:, : narrow.shape[1]], narrow, rtol=1e-4, atol=1e-5)  # the photo's half
    assert not np.allclose(wide[:, narrow.shape[1] :], narrow, rtol=1e-3)  # coloured squares: the mirror differs
    code, out, err = run(
        capsys, "train", "--data", folder, "--model", tmp_path / "m", "--mirror", "no", "--folds", 2, *base
    )
    assert code == 0, err
    saved = json.loads((tmp_path / "m" / "vggtransfer.json").read_text())
    assert saved["feature_config"]["features"]["mirror"] is False, saved["feature_config"]
    code, out, err = run(
        capsys, "train", "--data", folder, "--model", tmp_path / "m2", "--flip", "--mirror", "yes", *base
    )
    assert code == 2 and "--flip and --mirror yes" in err and not (tmp_path / "m2").exists(), err
    code, out, err = run(
        capsys, "train", "--data", folder, "--model", tmp_path / "m3", "--recipe", "head", "--mirror", "no", *base[:2]
    )
    assert code == 2 and "--mirror" in err and "block features are --recipe auto's" in err, err
    code, out, err = run(capsys, "train", "--store", tmp_path / "yes.h5", "--model", tmp_path / "m4", "--mirror", "no")
    assert code == 2 and "--mirror: stored features cannot change" in err, err
