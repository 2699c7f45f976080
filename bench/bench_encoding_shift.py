#!/usr/bin/env python
"""Is SIGNS' encoding gap a general rule? Small photos, trained on JPEG copies, tested on clean pixels vs JPEG copies.

SIGNS' training JPEGs are quality-75 encodings of the pixels that ``test_signs.h5`` holds, and the default model
scores higher on the JPEG copies of the test photos than on the h5 pixels (``bench_auto_datasets.py``). If that held
for small photos in general, a model trained on JPEGs should re-encode clean inputs the same way before predicting.
This bench asks the question on two other sets made SIGNS-like: every photo centre-cropped and resized to
``--side`` px (64, as SIGNS), the training photos stored as quality-``--quality`` JPEGs; the default ``vggtransfer
train`` classifier (auto) is trained on them and scored on the held-out photos' clean pixels and on their JPEG
copies. ants/bees: train vs val folders; tiger/cat: a seeded stratified 75/25 split. Writes
``bench/results/encoding_shift.json``.

    python bench/bench_encoding_shift.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import HYMENOPTERA, RESULTS, TIGER_CAT, WEIGHTS, cpu_model, jpeg_round_trip, write_results  # noqa: E402


def small(path, side: int) -> np.ndarray:
    """The photo's centre square resized to ``side`` px (bicubic), uint8 RGB: a SIGNS-sized photo."""
    from PIL import Image

    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return np.asarray(im.crop(box).resize((side, side), Image.BICUBIC))


def run(name, train, test, classes, args) -> dict:
    from vggtransfer.models.auto import AutoClassifier

    (tr_paths, tr_y), (te_paths, te_y) = train, test
    tr = [jpeg_round_trip(small(p, args.side), args.quality) for p in tr_paths]
    clean = [small(p, args.side) for p in te_paths]
    copies = [jpeg_round_trip(a, args.quality) for a in clean]
    model = AutoClassifier(args.weights, classes=classes)
    t0 = time.perf_counter()
    f_tr, ok, _ = model.attach().extract_images(tr, progress=False)
    f_clean, ok_clean, _ = model.attach().extract_images(clean, progress=False)
    f_copies, ok_copies, _ = model.attach().extract_images(copies, progress=False)
    seconds_extract = time.perf_counter() - t0
    report = model.train_on_features(f_tr, np.asarray(tr_y)[ok], seed=0)
    y = np.asarray(te_y)
    result = {
        "data": name,
        "train_photos": len(tr),
        "test_photos": len(clean),
        "choice": report.describe(),
        "accuracy_clean_pixels": float(np.mean(model.predict_features(f_clean).argmax(1) == y[ok_clean])),
        "accuracy_jpeg_copies": float(np.mean(model.predict_features(f_copies).argmax(1) == y[ok_copies])),
        "median_mse_clean_vs_copy": float(
            np.median([((a.astype(np.float64) - b) ** 2).mean() for a, b in zip(clean, copies)])
        ),
        "seconds_extract": seconds_extract,
    }
    print(result, flush=True)
    return result


def main(argv=None) -> int:
    from vggtransfer.core.runtime import describe_precision
    from vggtransfer.data.datasets import from_folder
    from vggtransfer.data.splits import split_indices

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(WEIGHTS))
    p.add_argument("--side", type=int, default=64)
    p.add_argument("--quality", type=int, default=75)
    p.add_argument("--seed", type=int, default=0, help="seed of the tiger/cat split")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.out = args.out or RESULTS / "encoding_shift.json"

    runs = []
    tr, va = from_folder(HYMENOPTERA / "train"), from_folder(HYMENOPTERA / "val")
    runs.append(run("ants_bees", (tr.paths, tr.labels), (va.paths, va.labels), tr.classes, args))
    tc = from_folder(TIGER_CAT)
    train_idx, test_idx = split_indices(len(tc), 0.25, args.seed, tc.labels)
    paths = np.asarray(tc.paths)
    runs.append(
        run(
            "tiger_cat",
            (paths[train_idx].tolist(), tc.labels[train_idx]),
            (paths[test_idx].tolist(), tc.labels[test_idx]),
            tc.classes,
            args,
        )
    )
    result = {"side": args.side, "quality": args.quality, "precision": describe_precision("auto"), "cpu": cpu_model()}
    result["runs"] = runs
    print(write_results(args.out, result, __file__, argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
