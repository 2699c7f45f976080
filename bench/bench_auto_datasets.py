#!/usr/bin/env python
"""The default auto recipe (what ``vggtransfer train --data DIR --model M`` runs) on SIGNS and ants/bees, 3 seeds.

SIGNS: train on the 1,080 JPEGs of 64x64_SIGNS/{train,val}_signs (label = the file name's first character), test on
the real test_signs.h5 (120 images). Ants/bees: train on hymenoptera_data/train (245), test on val (153). The block
features of each set are extracted once (the seed changes only the CV folds and the Dense head's initialisation);
selection time is reported against extraction time. Writes bench/results/auto_datasets.json.

SIGNS' training JPEGs are PIL quality-75 encodings of the original pixels, which test_signs.h5 holds; the same 120 test
photos in that encoding are 64x64_SIGNS/test_signs. Each seed's model is also scored on those (``also_on``), and
``encoding_check`` measures how close a quality-75 re-encoding of each h5 image is to its JPEG copy, so that the gap
between the two test figures is a measured fact (the encoding), not a guess. Neither figure chooses anything.

With ``--nested K`` each seed also estimates the whole procedure (selection, refit, calibration) by nested CV on
the training set alone (``train --nested-cv``): the figure the winner's own CV score overstates, since it is the best
of many candidates on the same folds. Writes bench/results/auto_datasets_nested.json instead.

    python bench/bench_auto_datasets.py [--cache DIR] [--nested 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    HYMENOPTERA,
    SHARED,
    WEIGHTS,
    add_features_option,
    cached,
    chosen_features,
    features_key,
    jpeg_round_trip,
    results_file,
    write_results,
)


def _extract(model, train_paths, test_images):
    t0 = time.perf_counter()
    feats, ok, errors = model.attach().extract_paths(train_paths, progress=False)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    if isinstance(test_images, np.ndarray):
        test_feats, test_ok, _ = model.attach().extract_images(test_images, progress=False)
    else:
        test_feats, test_ok, _ = model.attach().extract_paths(test_images, progress=False)
    t_test = time.perf_counter() - t0
    return feats, np.asarray(ok), len(errors), test_feats, np.asarray(test_ok), t_train, t_test


def _cached(model, name, cache, extract) -> dict:
    """``extract()`` -> dict of arrays, or what an earlier run cached for the same items (``--cache DIR``)."""
    path = cache / (name.replace("/", "_").replace(" ", "_") + ".npz") if cache else None
    return cached(path, features_key(model, name), extract)


def signs_encoding_check(h5_images, jpg_paths, quality=75) -> dict:
    """Mean squared error (0-255 scale, median over the 120 photos) between each h5 test image and its nearest JPEG
    copy, and between a PIL quality-``quality`` re-encoding of it and that copy: near zero if the copies are such
    re-encodings."""
    from PIL import Image

    jpg = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) for p in jpg_paths])
    x = h5_images.astype(np.float64)
    d = np.stack([((jpg - xi) ** 2).mean(axis=(1, 2, 3)) for xi in x])
    nearest = d.argmin(1)
    again = np.stack([jpeg_round_trip(xi, quality) for xi in h5_images]).astype(np.float64)
    return {
        "jpeg_quality": quality,
        "median_mse_h5_vs_jpg_copy": float(np.median(d.min(1))),
        "median_mse_reencoded_h5_vs_jpg_copy": float(np.median(((again - jpg[nearest]) ** 2).mean(axis=(1, 2, 3)))),
        "distinct_nearest_copies": int(len(set(nearest.tolist()))),
    }


def run(
    name,
    train_paths,
    train_labels,
    test_images,
    test_labels,
    classes,
    weights,
    seeds,
    features=None,
    cache=None,
    also_on=None,
    nested=0,
):
    from vggtransfer.core.runtime import describe_precision
    from vggtransfer.models.auto import AutoClassifier

    model = AutoClassifier(weights, classes=classes, features=features)
    print(model.features_spec.describe(), flush=True)

    # --cache: the features (and their extraction times) of an earlier run with the same items, spec, precision and
    # weights, so that a change to selection is measured without extracting again.
    def extract():
        names = ("feats", "ok", "errors", "test_feats", "test_ok", "t_train", "t_test")
        return dict(zip(names, _extract(model, train_paths, test_images)))

    z = _cached(model, name, cache, extract)
    feats, ok, n_errors, test_feats, test_ok = (z[k] for k in ("feats", "ok", "errors", "test_feats", "test_ok"))
    t_train, t_test = float(z["t_train"]), float(z["t_test"])
    also = None
    if also_on is not None:
        also_name, also_paths, also_labels = also_on

        def extract_also():
            f, good, _ = model.attach().extract_paths(also_paths, progress=False)
            return {"feats": f, "ok": np.asarray(good)}

        za = _cached(model, f"{name} {also_name}", cache, extract_also)
        also = (also_name, za["feats"], np.asarray(also_labels)[za["ok"]])
    y = np.asarray(train_labels)[ok]
    y_test = np.asarray(test_labels)[test_ok]
    runs = []
    for seed in seeds:
        t0 = time.perf_counter()
        report = model.train_on_features(feats, y, seed=seed, nested=nested)
        seconds = time.perf_counter() - t0 - report.seconds_nested
        acc = float(np.mean(model.predict_features(test_feats).argmax(1) == y_test))
        extra = {}
        if also is not None:
            extra[f"accuracy_{also[0]}"] = float(np.mean(model.predict_features(also[1]).argmax(1) == also[2]))
        if nested:
            n = report.selection["nested"]
            extra.update(
                nested_mean=n["mean"],
                nested_std=n["std"],
                nested_scores=n["scores"],
                nested_choices=n["choices"],
                seconds_nested=report.seconds_nested,
            )
        runs.append(
            {
                "seed": seed,
                "test_accuracy": acc,
                **extra,
                "cv_mean": report.selection["cv_mean"],
                "cv_std": report.selection["cv_std"],
                "choice": report.describe(),
                "seconds_select_and_fit": seconds,
            }
        )
        shown = {k: v for k, v in extra.items() if not isinstance(v, list)}
        print(f"{name} seed {seed}: test {acc:.4f} {shown}; {report.describe()} ({seconds:.1f} s)", flush=True)
    out = {} if also is None else {f"mean_accuracy_{also[0]}": float(np.mean([r[f"accuracy_{also[0]}"] for r in runs]))}
    if nested:
        out["mean_nested_estimate"] = float(np.mean([r["nested_mean"] for r in runs]))
    return {
        **out,
        "train_items": int(len(y)),
        "unreadable": int(n_errors),
        "test_items": int(len(y_test)),
        "seconds_extract_train": t_train,
        "seconds_extract_test": t_test,
        "mean_test_accuracy": float(np.mean([r["test_accuracy"] for r in runs])),
        "runs": runs,
        "precision": describe_precision("auto"),
        "features": model.features_spec.describe(),
    }


def signs_items() -> tuple:
    """``(train paths, train labels, test images, test labels, classes)``: the 1,080 training JPEGs of SIGNS
    (label = the file name's first character) and the pixels of the real test_signs.h5."""
    import h5py

    signs = SHARED / "data" / "signs"
    jpgs = sorted((signs / "64x64_SIGNS" / "train_signs").glob("*.jpg")) + sorted(
        (signs / "64x64_SIGNS" / "val_signs").glob("*.jpg")
    )
    with h5py.File(signs / "test_signs.h5", "r") as fh:
        test_x, test_y = fh["test_set_x"][()], fh["test_set_y"][()]
    return [str(p) for p in jpgs], [int(p.name[0]) for p in jpgs], test_x, test_y, tuple(str(i) for i in range(6))


def ants_bees_items() -> tuple:
    """``(train paths, train labels, val paths, val labels, classes)`` of hymenoptera_data (every file, as
    ``vggtransfer train`` lists them)."""
    hym = {}
    for split in ("train", "val"):
        hym[split] = [
            (str(f), c)
            for c, cls in enumerate(("ants", "bees"))
            for f in sorted((HYMENOPTERA / split / cls).iterdir())
            if f.is_file()
        ]
    return (
        [p for p, _ in hym["train"]],
        [c for _, c in hym["train"]],
        [p for p, _ in hym["val"]],
        [c for _, c in hym["val"]],
        ("ants", "bees"),
    )


def main(argv=None) -> int:

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--seeds", default="0,1,2")
    add_features_option(p)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--cache", type=Path, default=None, help="keep the extracted features here and reuse them")
    p.add_argument(
        "--nested",
        type=int,
        default=0,
        help="also estimate the whole procedure by nested CV with this many outer folds (train --nested-cv); "
        "writes auto_datasets_nested.json",
    )
    args = p.parse_args(argv)
    features = chosen_features(args)
    args.out = args.out or results_file("auto_datasets_nested" if args.nested else "auto_datasets", args)
    seeds = [int(s) for s in args.seeds.split(",")]
    result = {}
    s = signs_items()
    test_jpgs = sorted((SHARED / "data" / "signs" / "64x64_SIGNS" / "test_signs").glob("*.jpg"))
    also = ("test_jpeg_copies", [str(p) for p in test_jpgs], [int(p.name[0]) for p in test_jpgs])
    result["signs"] = run("signs", *s, args.weights, seeds, features, args.cache, also_on=also, nested=args.nested)
    result["signs"]["encoding_check"] = signs_encoding_check(s[2], test_jpgs)
    result["ants_bees"] = run(
        "ants/bees", *ants_bees_items(), args.weights, seeds, features, args.cache, nested=args.nested
    )
    write_results(args.out, result, __file__, argv)
    for k in ("signs", "ants_bees"):
        r = result[k]
        print(
            f"{k}: mean test accuracy {r['mean_test_accuracy']:.4f}; extraction {r['seconds_extract_train']:.0f} s "
            f"(train) + {r['seconds_extract_test']:.0f} s (test); selection "
            f"{np.median([x['seconds_select_and_fit'] for x in r['runs']]):.1f} s per seed"
            + (f"; nested CV estimate {r['mean_nested_estimate']:.4f}" if args.nested else "")
        )
    print(
        f"signs, the same test photos as training's JPEG encoding: {result['signs']['mean_accuracy_test_jpeg_copies']:.4f}"
    )
    print(f"signs encoding check: {result['signs']['encoding_check']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
