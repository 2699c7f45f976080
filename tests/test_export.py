"""SavedModel export of every model kind: parity with the library in a process that cannot import vggtransfer,
both signatures, per-item validity, the CLI and its options, and saved_model_cli."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from recipe_data import colour_folder

from vggtransfer.cli import main as cli
from vggtransfer.data import datasets

REPO = Path(__file__).resolve().parents[1]

# The consumer: plain TensorFlow in a fresh isolated interpreter (-I: no PYTHONPATH, no user site, no cwd) where
# `import vggtransfer` is made to fail, so nothing of the library can be used.
CONSUMER = textwrap.dedent("""
    import json, sys
    sys.modules["vggtransfer"] = None
    try:
        import vggtransfer  # noqa: F401
        raise SystemExit("vggtransfer is importable")
    except ImportError:
        pass
    import numpy as np
    import tensorflow as tf
    jobs = json.load(open(sys.argv[1]))
    out = {}
    for job in jobs:
        sig = tf.saved_model.load(job["export"]).signatures[job["signature"]]
        if job["signature"] == "serving_default":
            res = sig(image_bytes=tf.constant([open(p, "rb").read() for p in job["paths"]]))
        else:
            res = sig(images=tf.constant(np.load(job["arrays"])))
        out[job["name"]] = {k: (v.numpy().astype(str).tolist() if v.dtype == tf.string else v.numpy().tolist())
                            for k, v in res.items()}
    print(json.dumps(out))
""")


def consume(jobs, tmp_path) -> dict:
    spec = tmp_path / "jobs.json"
    spec.write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run(
        [sys.executable, "-I", "-c", CONSUMER, str(spec)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    ds = datasets.from_folder(colour_folder(root / "data", per_class=8))
    rng = np.random.default_rng(1)
    extra = []  # other sizes and orientations, predicted in one padded batch with the 40 x 40 photos
    for i, (w, h) in enumerate([(70, 44), (44, 90), (120, 120), (33, 60)]):
        p = root / f"extra{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).resize((w, h)).save(p, quality=92)
        extra.append(str(p))
    bad = root / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    paths = ds.paths[:3] + [str(bad)] + extra + ds.paths[-3:]
    return ds, paths, 3


@pytest.fixture(scope="module")
def models(scaled_npy, photos, tmp_path_factory):
    """One saved model of each kind."""
    from vggtransfer.data.store import build_store, open_store
    from vggtransfer.features.extractor import FeatureExtractor
    from vggtransfer.features.spec import FeatureSpec
    from vggtransfer.models.auto import AutoClassifier, AutoRegressor
    from vggtransfer.models.classifier import VggClassifier, VggRegressor
    from vggtransfer.models.finetune import FineTunedClassifier
    from vggtransfer.models.linear import LinearModel
    from vggtransfer.models.vgg16 import Vgg16

    ds = photos[0]
    root = tmp_path_factory.mktemp("models")
    y = np.where(ds.labels == 0, 40.0, 100.0) + np.random.default_rng(0).normal(0, 3, len(ds))
    fit = dict(epochs=15, patience=15, batch_size=8, progress=False)
    out = {}
    m = AutoClassifier(
        scaled_npy,
        features=FeatureSpec(end_points=("pool4", "pool5"), scales=(48, 64), flip=True),
        models=("logreg",),
        folds=3,
        precision="fp32",
    )
    m.train_dataset(ds, progress=False)
    out["auto-classifier"] = m.save(root / "auto_clf")
    m = AutoClassifier(
        scaled_npy,
        features=FeatureSpec(end_points=("pool4", "pool5"), scales=(48, 64), mirror=True),
        models=("logreg", "ridge"),
        folds=3,
        precision="fp32",
    )
    m.train_dataset(ds, progress=False)
    out["auto-mirror"] = m.save(root / "auto_mirror")
    m = AutoClassifier(
        scaled_npy,
        features=FeatureSpec(end_points=("pool5",), scales=(48,)),
        models=("dense",),
        members=3,
        hidden=(8,),
        folds=3,
        epochs=10,
        precision="fp32",
    )
    m.train_dataset(ds, progress=False)
    out["auto-dense-ensemble"] = m.save(root / "auto_bag")
    m = AutoClassifier(scaled_npy, features=FeatureSpec(scales=(48,)), models=("ridge",), folds=3, precision="fp32")
    m.train_dataset(ds, progress=False)
    assert m.fitted["model"] == "ridge" and np.shape(m.fitted["arrays"]["ridge"]["coef"])[0] == len(ds.classes)
    out["auto-ridge-classifier"] = m.save(root / "auto_lsq")
    m = AutoClassifier(
        scaled_npy, features=FeatureSpec(scales=(48,)), hidden=(8,), members=2, folds=3, epochs=10, precision="fp32"
    )
    m.train_dataset(ds, progress=False)
    assert m.fitted["model"] == "average" and len(m.fitted["parts"]) >= 2, m.selection  # the default's average
    out["auto-average"] = m.save(root / "auto_avg")
    m = AutoRegressor(scaled_npy, features=FeatureSpec(scales=(64,)), models=("ridge",), folds=3, precision="fp32")
    m.train(ds.paths, y)
    out["auto-ridge"] = m.save(root / "auto_ridge")
    m = Vgg16(scaled_npy, hidden=8, features=FeatureSpec(scales=(48,)), folds=3, epochs=10, precision="fp32")
    m.train(ds.paths, y)
    out["vgg16"] = m.save(root / "vgg16")
    m = VggClassifier(scaled_npy, classes=ds.classes, image_size=32, hidden=(8,), precision="fp32")
    m.train_dataset(ds, val_fraction=0.3, **fit)
    out["classifier"] = m.save(root / "clf")
    m = VggRegressor(scaled_npy, image_size=48, hidden=(8,), pooling="max", precision="fp32")
    m.train(ds.paths, y, **fit)
    out["regressor"] = m.save(root / "reg")
    with FeatureExtractor(scaled_npy, pooling="avg", image_size=32, precision="fp32") as fx:
        store = open_store(build_store(root / "f.h5", ds, fx, progress=False))
    out["linear"] = LinearModel.fit(store, cs=(0.01, 1.0), cv=3).save(root / "lin")
    m = FineTunedClassifier(scaled_npy, classes=ds.classes, trainable_from="conv5_3", image_size=32, hidden=(8,))
    m.train_dataset(ds, val_fraction=0.3, views=1, epochs=2, patience=2, batch_size=8, progress=False)
    out["finetuned"] = m.save(root / "ft")
    return out


def _reference(model_dir, npy, paths, arrays):
    import warnings

    from vggtransfer.models.registry import load_model

    model = load_model(model_dir, npy, precision="fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.predict(paths), model.predict_arrays(arrays), getattr(model, "classes", ())


def test_every_kind_exports_and_matches_the_library_without_it(scaled_npy, photos, models, tmp_path, capsys):
    ds, paths, bad_index = photos
    arrays = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in ds.paths[:4]])
    np.save(tmp_path / "arrays.npy", arrays.astype(np.float32) / 255.0)
    jobs, refs = [], {}
    for name, model_dir in models.items():
        target = tmp_path / "exports" / name
        assert (
            cli(
                [
                    "export",
                    "--model",
                    str(model_dir),
                    "--out",
                    str(target),
                    "--weights",
                    str(scaled_npy),
                    "--batch-size",
                    "4",
                ]
            )
            == 0
        )
        printed = capsys.readouterr().out
        assert "serving_default" in printed and "MiB on disk" in printed
        meta = json.loads((target / "assets" / "export.json").read_text())
        saved = json.loads((target / "assets" / "vggtransfer.json").read_text())
        assert meta["library_version"] and len(meta["weights_sha256"]) == 64 and meta["precision"] == "fp32"
        assert saved.get("weights_sha256") == meta["weights_sha256"]
        refs[name] = _reference(model_dir, scaled_npy, paths, arrays)
        if refs[name][2]:
            assert (target / "assets" / "classes.txt").read_text().split() == list(refs[name][2])
        jobs.append({"name": name, "export": str(target), "signature": "serving_default", "paths": paths})
        jobs.append(
            {
                "name": name + "/images",
                "export": str(target),
                "signature": "serving_images",
                "arrays": str(tmp_path / "arrays.npy"),
            }
        )
    got = consume(jobs, tmp_path)
    for name, (ref, ref_arrays, classes) in refs.items():
        out, out_arrays = got[name], got[name + "/images"]
        valid = np.array(out["valid"])
        assert valid.tolist() == [i != bad_index for i in range(len(paths))], name
        if "value" in out:
            value = np.array(out["value"], np.float64)
            assert np.isnan(value[bad_index]) and np.isnan(ref[bad_index])
            np.testing.assert_allclose(value[valid], ref[valid], rtol=1e-4, err_msg=name)
            np.testing.assert_allclose(np.array(out_arrays["value"]), ref_arrays, rtol=1e-4, err_msg=name)
        else:
            probs = np.array(out["probabilities"], np.float64)
            assert np.isnan(probs[bad_index]).all() and out["class_index"][bad_index] == -1
            assert out["class_name"][bad_index] == ""
            np.testing.assert_allclose(probs[valid], ref[valid], atol=1e-4, err_msg=name)
            assert np.array(out["class_index"])[valid].tolist() == ref[valid].argmax(1).tolist(), name
            assert [out["class_name"][i] for i in np.flatnonzero(valid)] == [
                classes[j] for j in ref[valid].argmax(1)
            ], name
            np.testing.assert_allclose(np.array(out_arrays["probabilities"]), ref_arrays, atol=1e-4, err_msg=name)


def test_saved_model_cli_lists_both_signatures_with_shapes(scaled_npy, models, tmp_path):
    from vggtransfer.serving.export import export_saved_model

    target = tmp_path / "clf"
    report = export_saved_model(models["classifier"], target, weights_path=scaled_npy)
    assert report["size_bytes"] > report["conv_bytes"] > 50e6  # the 13 conv layers, fp32, are in the export
    tool = shutil.which("saved_model_cli") or str(Path(sys.executable).with_name("saved_model_cli"))
    proc = subprocess.run(
        [tool, "show", "--dir", str(target), "--all"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    default = text[text.index("signature_def['serving_default']") :]
    images = text[text.index("signature_def['serving_images']") :]
    assert "inputs['image_bytes'] tensor_info:" in default and "dtype: DT_STRING" in default
    assert "shape: (-1)" in default
    assert "inputs['images'] tensor_info:" in images and "shape: (-1, -1, -1, 3)" in images
    for out in ("probabilities", "class_index", "class_name", "valid"):
        assert f"outputs['{out}']" in default and f"outputs['{out}']" in images
    assert "shape: (-1, 2)" in default  # probabilities (n, K)


def test_export_options_and_refusals(scaled_npy, photos, models, tmp_path, capsys):
    ds, paths, bad_index = photos
    src = models["vgg16"]
    # Only a previous export is ever replaced.
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    assert cli(["export", "--model", str(src), "--out", str(keep), "--weights", str(scaled_npy)]) == 2
    err = capsys.readouterr().err
    assert "not a vggtransfer export" in err and "Traceback" not in err and (keep / "notes.txt").exists()
    assert cli(["export", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "e")]) == 2
    assert "no such model directory" in capsys.readouterr().err
    assert cli(["export", "--model", str(src), "--out", str(src / "inside"), "--weights", str(scaled_npy)]) == 2
    assert "overlaps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli(["export", "--model", str(src), "--out", "x", "--precision", "fp16"])
    assert exit_.value.code == 2 and "argument --precision: invalid choice: 'fp16'" in capsys.readouterr().err
    # fp32 export, then replaced in place by a bf16 one with other options.
    target = tmp_path / "served" / "1"
    assert (
        cli(["export", "--model", str(src), "--out", str(target), "--weights", str(scaled_npy), "--threads", "1"]) == 0
    )
    assert (
        cli(
            [
                "export",
                "--model",
                str(src),
                "--out",
                str(target),
                "--weights",
                str(scaled_npy),
                "--precision",
                "bf16",
                "--batch-size",
                "1",
                "--max-pixels",
                "3000",
                "-q",
            ]
        )
        == 0
    )
    meta = json.loads((target / "assets" / "export.json").read_text())
    assert meta["precision"] == "bf16" and meta["batch_size"] == 1 and meta["max_pixels"] == 3000
    assert not list(tmp_path.glob("served/.1.*"))  # no temp folder left behind
    out = consume([{"name": "bf16", "export": str(target), "signature": "serving_default", "paths": paths}], tmp_path)[
        "bf16"
    ]
    ref, _, _ = _reference(src, scaled_npy, paths, np.zeros((1, 40, 40, 3), np.uint8))
    small = [i for i, p in enumerate(paths) if i != bad_index and np.prod(Image.open(p).size) <= 3000]
    big = [i for i, p in enumerate(paths) if i != bad_index and np.prod(Image.open(p).size) > 3000]
    assert big and small and [out["valid"][i] for i in big] == [False] * len(big)  # over --max-pixels
    value = np.array(out["value"], np.float64)
    np.testing.assert_allclose(value[small], ref[small], rtol=0.05)  # bf16 convolutions: close, not equal
