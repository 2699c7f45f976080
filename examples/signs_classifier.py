"""SIGNS hand signs (6 classes): frozen VGG16, global max pooling, Dense(128, relu), softmax(6).

Trains on the 1,080 training JPEGs of ../shared/data/signs/64x64_SIGNS (train_signs + val_signs; a seeded
stratified 20 % of them drives early stopping) and tests on the real test_signs.h5 (120 images). The 64x64 photos
are upsampled to each --sizes input size; features are cached in HDF5 stores under --cache (rerun: no recompute).

    python examples/signs_classifier.py --weights ../shared/weights/vgg16_conv_imagenet.npy

Prints one line per input size (the original recipe is 64 px: it reported 91.67 %) and writes results.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from vggtransfer.data import datasets
from vggtransfer.data.store import build_store, open_store
from vggtransfer.features.extractor import FeatureExtractor
from vggtransfer.models.classifier import VggClassifier

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "signs")
    p.add_argument("--weights", default=None, help="vgg16 .npy (default: the usual weights lookup)")
    p.add_argument("--sizes", default="64,128,224", help="input sizes to compare (comma-separated)")
    p.add_argument("--pooling", default="max", choices=("max", "avg", "flatten"))
    p.add_argument("--cache", type=Path, default=Path("/tmp/vggtransfer-examples/signs"))
    p.add_argument("--out", type=Path, default=None, help="where to save the best model (optional)")
    p.add_argument("--seeds", default="0,1,2", help="head seeds per size; the figure is their mean and each run")
    args = p.parse_args(argv)
    if not args.data.exists() and Path("/work/shared/data/signs").exists():
        args.data = Path("/work/shared/data/signs")

    train = datasets.concat(
        datasets.signs_folder(args.data / "64x64_SIGNS" / "train_signs"),
        datasets.signs_folder(args.data / "64x64_SIGNS" / "val_signs"),
    )
    test = datasets.from_signs_h5(args.data / "test_signs.h5", split="test")
    print(
        f"train: {len(train)} JPEGs ({train.class_counts().tolist()} per class), bad: {train.bad}; "
        f"test: {len(test)} images from test_signs.h5"
    )
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        t0 = time.perf_counter()
        fx = FeatureExtractor(
            args.weights or _default_weights(), end_point="pool5", pooling=args.pooling, image_size=size, batch_size=16
        )
        tr_store = build_store(args.cache / f"train_{args.pooling}_{size}.h5", train, fx, progress=True)
        te_store = build_store(args.cache / f"test_{args.pooling}_{size}.h5", test, fx, progress=True)
        fx.close()
        t1 = time.perf_counter()
        tr, te = open_store(tr_store), open_store(te_store)
        accs = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            clf = VggClassifier(
                args.weights,
                classes=train.classes,
                image_size=size,
                pooling=args.pooling,
                hidden=(128,),
                dropout=0.0,
                l2=1e-3,
            )
            clf.train_store(tr, val_fraction=0.2, seed=seed, epochs=300, patience=30, progress=False)
            probs = clf.head.predict_features(clf.session, te.features)
            acc = float(np.mean(probs.argmax(1) == te.labels))
            accs.append(acc)
            if args.out and size == max(int(s) for s in args.sizes.split(",")) and seed == 0:
                clf.save(args.out)
            clf.close()
        res = {
            "image_size": size,
            "pooling": args.pooling,
            "test_accuracy_mean": float(np.mean(accs)),
            "test_accuracy_runs": accs,
            "seconds_features": round(t1 - t0, 1),
            "seconds_heads": round(time.perf_counter() - t1, 1),
        }
        results.append(res)
        print(
            f"size {size:3d} px, pool5 {args.pooling}, Dense(128)+softmax(6): test accuracy "
            f"{100 * np.mean(accs):.2f} % (runs: {', '.join(f'{100 * a:.2f}' for a in accs)}) "
            f"[features {t1 - t0:.0f} s, heads {time.perf_counter() - t1:.0f} s]",
            flush=True,
        )
    best = max(results, key=lambda r: r["test_accuracy_mean"])
    print(
        f"best: {best['image_size']} px -> {100 * best['test_accuracy_mean']:.2f} % test accuracy "
        f"(original recipe: 91.67 %)"
    )
    args.cache.mkdir(parents=True, exist_ok=True)
    (args.cache / "results.json").write_text(json.dumps(results, indent=2))
    return 0


def _default_weights():
    from vggtransfer.weights.sources import resolve_weights

    return resolve_weights(None, arch="vgg16")


if __name__ == "__main__":
    raise SystemExit(main())
