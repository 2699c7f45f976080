#!/usr/bin/env python
"""SavedModel export on the real weights and photos: parity for every model kind, throughput, size on disk.

1. Trains one model of each kind on 60 + 60 tiger/cat photos (lengths for the regressors, tiger vs cat for the
   classifiers): the default Vgg16 (auto), the auto classifier, the head regressor and classifier, the linear model
   (pool5 average store) and a fine-tuned classifier (conv5_3 on).
2. Parity: ``vggtransfer predict`` (``load_model(..., precision='fp32').predict``) against the fp32 export's
   ``serving_default`` on the two demo photos + 100 held-out photos (50 + 50), the export run in a fresh
   ``python -I`` process where ``import vggtransfer`` fails.
3. Throughput on 224 x 224 JPEGs (48 held-out photos, centre-cropped): library predict vs the export loaded with
   ``tf.saved_model.load`` in this process (file bytes read inside the timing), fp32 vs fp32 and bf16 vs bf16,
   interleaved, medians of ``--reps``.

    python bench/bench_export.py            # results: bench/results/export.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

from bench.common import RESULTS, SHARED, TIGER_CAT, WEIGHTS, median, write_results  # noqa: E402

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
    export, paths, out = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
    sig = tf.saved_model.load(export).signatures["serving_default"]
    res = [sig(image_bytes=tf.constant([open(p, "rb").read() for p in paths[s:s + 16]])) for s in range(0, len(paths), 16)]
    key = "value" if "value" in res[0] else "probabilities"
    np.savez(out, out=np.concatenate([r[key].numpy() for r in res]), valid=np.concatenate([r["valid"].numpy() for r in res]))
""")


def train_models(weights, train_paths, labels, lengths, root: Path) -> dict:
    from vggtransfer.data import datasets
    from vggtransfer.data.store import build_store, open_store
    from vggtransfer.features.extractor import FeatureExtractor
    from vggtransfer.models.auto import AutoClassifier
    from vggtransfer.models.classifier import VggClassifier, VggRegressor
    from vggtransfer.models.finetune import FineTunedClassifier
    from vggtransfer.models.linear import LinearModel
    from vggtransfer.models.vgg16 import Vgg16

    classes = ("kittycat", "tiger")
    y_cls = np.array([classes.index(c) for c in labels])
    ds = datasets.Dataset(list(map(str, train_paths)), y_cls, classes=classes)
    out = {}

    def timed(name, fn):
        t = time.perf_counter()
        out[name] = str(fn())
        print(f"trained {name} in {time.perf_counter() - t:.0f} s", flush=True)

    timed(
        "auto regressor (Vgg16 defaults)",
        lambda: _fit(Vgg16(weights), "train", train_paths, lengths).save(root / "vgg16"),
    )
    timed("auto classifier", lambda: _fit(AutoClassifier(weights), "train_dataset", ds).save(root / "auto_clf"))
    timed(
        "head regressor",
        lambda: _fit(VggRegressor(weights), "train", train_paths, lengths, progress=False).save(root / "head_reg"),
    )
    timed(
        "head classifier",
        lambda: _fit(VggClassifier(weights, classes=classes), "train_dataset", ds, progress=False).save(
            root / "head_clf"
        ),
    )

    def linear():
        with FeatureExtractor(weights, pooling="avg") as fx:
            store = open_store(build_store(root / "pool5avg.h5", ds, fx, progress=False))
        return LinearModel.fit(store).save(root / "linear")

    timed("linear", linear)
    timed(
        "finetuned",
        lambda: _fit(
            FineTunedClassifier(weights, classes=classes, trainable_from="conv5_3"),
            "train_dataset",
            ds,
            views=1,
            epochs=3,
            patience=3,
            progress=False,
        ).save(root / "finetuned"),
    )
    return out


def _fit(model, method, *args, **kwargs):
    getattr(model, method)(*args, **kwargs)
    return model


def parity(name, model_dir, weights, paths, root: Path) -> dict:
    from vggtransfer.models.registry import load_model
    from vggtransfer.serving.export import export_saved_model

    model = load_model(model_dir, weights, precision="fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = model.predict(paths)
    model.close()
    target = root / "exports" / Path(model_dir).name
    rep = export_saved_model(model_dir, target, weights_path=weights)
    (root / "paths.json").write_text(json.dumps([str(p) for p in paths]))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run(
        [sys.executable, "-I", "-c", CONSUMER, str(target), str(root / "paths.json"), str(root / "got.npz")],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
    if proc.returncode:
        raise SystemExit(f"{name}: consumer failed: {proc.stderr[-2000:]}")
    got = np.load(root / "got.npz")
    out, valid = got["out"].astype(np.float64), got["valid"]
    row = {
        "model": name,
        "n": len(paths),
        "all_valid": bool(valid.all()),
        "size_mib": rep["size_bytes"] / 2**20,
        "conv_mib": rep["conv_bytes"] / 2**20,
    }
    if ref.ndim == 1:
        row["max_rel_error"] = float(np.max(np.abs(out - ref) / np.abs(ref)))
    else:
        row["max_abs_prob_diff"] = float(np.max(np.abs(out - ref)))
        row["same_top_class"] = int(np.sum(out.argmax(1) == ref.argmax(1)))
    print(json.dumps(row), flush=True)
    return row


def throughput(model_dir, weights, paths, reps: int, root: Path) -> dict:
    import tensorflow as tf

    from vggtransfer.models.registry import load_model
    from vggtransfer.serving.export import export_saved_model

    runs = {}
    for precision in ("fp32", "bf16"):
        target = root / f"tp_{precision}"
        export_saved_model(model_dir, target, weights_path=weights, precision=precision)
        sig = tf.saved_model.load(str(target)).signatures["serving_default"]
        lib = load_model(model_dir, weights, precision=precision)

        def run_export():
            for s in range(0, len(paths), 16):
                sig(image_bytes=tf.constant([Path(p).read_bytes() for p in paths[s : s + 16]]))

        def run_library():
            lib.predict(paths)

        run_export(), run_library()  # warm-up (graph optimisation, first allocations)
        lib_s, exp_s = [], []
        for _ in range(reps):
            for fn, acc in ((run_library, lib_s), (run_export, exp_s)):
                t = time.perf_counter()
                fn()
                acc.append(time.perf_counter() - t)
        lib.close()
        n = len(paths)
        runs[precision] = {
            "library_img_s": n / median(lib_s),
            "export_img_s": n / median(exp_s),
            "ratio": median(lib_s) / median(exp_s),
            "library_s": lib_s,
            "export_s": exp_s,
        }
        print(
            f"{precision}: library {runs[precision]['library_img_s']:.2f} img/s, export "
            f"{runs[precision]['export_img_s']:.2f} img/s, ratio {runs[precision]['ratio']:.3f}",
            flush=True,
        )
    return runs


def bf16_vs_fp32(root: Path, paths) -> float:
    import tensorflow as tf

    outs = []
    for precision in ("fp32", "bf16"):
        sig = tf.saved_model.load(str(root / f"tp_{precision}")).signatures["serving_default"]
        outs.append(
            np.concatenate(
                [
                    sig(image_bytes=tf.constant([Path(p).read_bytes() for p in paths[s : s + 16]]))["value"].numpy()
                    for s in range(0, len(paths), 16)
                ]
            )
        )
    return float(np.max(np.abs(outs[1] - outs[0]) / np.abs(outs[0])))


def main(argv=None) -> int:
    from PIL import Image
    from train_length_regressor import fake_lengths, find_images

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=TIGER_CAT)
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--train", type=int, default=60, help="training photos per class")
    p.add_argument("--heldout", type=int, default=50, help="held-out photos per class")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "export.json")
    args = p.parse_args(argv)

    paths, labels = find_images(args.data, args.train + args.heldout)
    labels = np.array(labels)
    train = [i for c in ("kittycat", "tiger") for i in np.flatnonzero(labels == c)[: args.train]]
    held = [i for c in ("kittycat", "tiger") for i in np.flatnonzero(labels == c)[args.train :]]
    demo = sorted(str(f) for f in (SHARED / "data" / "morvan_tiger_kittycat" / "demo").rglob("*") if f.is_file())
    lengths = fake_lengths(list(labels[train]), 0)
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        models = train_models(args.weights, [paths[i] for i in train], list(labels[train]), lengths, root)
        eval_paths = demo + [str(paths[i]) for i in held]
        rows = [parity(name, d, args.weights, eval_paths, root) for name, d in models.items()]
        square = root / "224"
        square.mkdir()
        tp_paths = []
        for k, i in enumerate(held[::2][:48]):
            img = Image.open(paths[i]).convert("RGB")
            side = min(img.size)
            left, top = (img.width - side) // 2, (img.height - side) // 2
            img.crop((left, top, left + side, top + side)).resize((224, 224), Image.Resampling.BILINEAR).save(
                square / f"{k:03d}.jpg", quality=95
            )
            tp_paths.append(str(square / f"{k:03d}.jpg"))
        default = models["auto regressor (Vgg16 defaults)"]
        tp = throughput(default, args.weights, tp_paths, args.reps, root)
        bf16_err = bf16_vs_fp32(root, tp_paths)
        result = {
            "parity": rows,
            "throughput_224": tp,
            "bf16_export_vs_fp32_max_rel": bf16_err,
            "seconds": time.perf_counter() - t0,
        }
    write_results(args.out, result, __file__, argv)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
