#!/usr/bin/env python
"""The VGG paper's Caltech protocol on any class-folder data set, with the defaults of ``vggtransfer train``.

Simonyan & Zisserman (2015), section 4.3 / Table 11: several random splits, each with ``--train-per-class`` training
photos per class (30) and up to ``--test-per-class`` test photos (50) of the remaining ones; the figure is the mean
class recall (the mean over classes of the share of that class's test photos predicted right: ``vggtransfer
evaluate``'s ``mean_class_recall``), averaged over the splits. The expected calibration error of the test
predictions and their log loss are reported beside it. Each split trains the default auto recipe on its
training photos alone (cross-validation chooses the blocks and the model there, never looking at the test photos)
and scores its test photos.

The default block features of every photo any split uses are extracted once (a photo's features do not depend on
the split); extraction and each split's selection + refit are timed. This project has no 102-class photo set; run it
on one (DATA/<class>/<photo>, e.g. Caltech-101's 101_ObjectCategories) as:

    python bench/bench_protocol.py --data 101_ObjectCategories --out bench/results/protocol_caltech101.json

Measured here on the sets there are (2 and 6 classes; the same protocol, 30 training photos per class):

    python bench/bench_protocol.py --data ../shared/data/hymenoptera/hymenoptera_data/train \\
        --data ../shared/data/hymenoptera/hymenoptera_data/val --out bench/results/protocol_ants_bees.json
    python bench/bench_protocol.py --layout signs --data ../shared/data/signs/64x64_SIGNS/train_signs \\
        --data ../shared/data/signs/64x64_SIGNS/val_signs --data ../shared/data/signs/64x64_SIGNS/test_signs \\
        --out bench/results/protocol_signs.json
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import WEIGHTS, cached, features_key, write_results  # noqa: E402


def protocol_splits(labels, n_classes: int, train_per_class: int, test_per_class: int, splits: int, seed: int):
    """``splits`` seeded (train, test) index pairs: per class, ``train_per_class`` random items for training and up to
    ``test_per_class`` of the others for testing. A class with no item left to test is an error (named)."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=n_classes)
    short = [c for c in range(n_classes) if counts[c] <= train_per_class]
    if short:
        raise SystemExit(
            f"classes {short[:10]} have {train_per_class} items or fewer: the protocol needs {train_per_class} "
            "for training and at least one to test (--train-per-class)"
        )
    out = []
    for s in range(splits):
        rng = np.random.default_rng(seed + s)
        train, test = [], []
        for c in range(n_classes):
            idx = rng.permutation(np.flatnonzero(labels == c))
            train.extend(idx[:train_per_class])
            test.extend(idx[train_per_class : train_per_class + test_per_class])
        out.append((np.sort(np.array(train, int)), np.sort(np.array(test, int))))
    return out


def load(dirs, layout: str):
    from vggtransfer.data import datasets

    read = datasets.signs_folder if layout == "signs" else datasets.from_folder
    parts = [read(d) for d in dirs]
    data = datasets.concat(*parts) if len(parts) > 1 else parts[0]
    for bad in data.bad:
        print(f"skipped {bad}", file=sys.stderr)
    return data


def main(argv=None) -> int:
    from sklearn.metrics import balanced_accuracy_score, log_loss

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, action="append", required=True, help="a class-folder root (repeat to merge)")
    p.add_argument("--layout", choices=("folders", "signs"), default="folders", help="signs: label = name prefix")
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--train-per-class", type=int, default=30)
    p.add_argument("--test-per-class", type=int, default=50)
    p.add_argument("--splits", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache", type=Path, default=None, help="an .npz keeping the extracted features for a re-run")
    args = p.parse_args(argv)
    from vggtransfer.models.auto import AutoClassifier
    from vggtransfer.models.calibration import expected_calibration_error

    data = load(args.data, args.layout)
    k = len(data.classes)
    splits = protocol_splits(data.labels, k, args.train_per_class, args.test_per_class, args.splits, args.seed)
    used = np.unique(np.concatenate([np.concatenate(s) for s in splits]))
    paths = [data.paths[i] for i in used]
    model = AutoClassifier(args.weights, classes=data.classes)
    print(f"{len(data)} photos in {k} classes; {len(used)} used by {args.splits} splits", flush=True)
    print(model.features_spec.describe(), flush=True)
    digest = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]

    def extract():
        t0 = time.perf_counter()
        feats, ok, errors = model.attach().extract_paths(paths, progress=False)
        for e in errors:
            print(f"unreadable: {e}", file=sys.stderr)
        return {"feats": feats, "ok": np.asarray(ok, dtype=np.int64), "seconds": time.perf_counter() - t0}

    z = cached(args.cache, features_key(model, f"protocol {digest}"), extract)
    row = np.full(len(data), -1)  # data index -> row of feats (-1: not extracted or unreadable)
    row[used[z["ok"]]] = np.arange(len(z["ok"]))  # ok: the indices (into paths) of the photos extracted
    runs = []
    for s, (train, test) in enumerate(splits):
        train, test = train[row[train] >= 0], test[row[test] >= 0]
        t0 = time.perf_counter()
        report = model.train_on_features(z["feats"][row[train]], data.labels[train], seed=args.seed + s)
        seconds = time.perf_counter() - t0
        probs = model.predict_features(z["feats"][row[test]])
        pred, truth = probs.argmax(1), data.labels[test]
        runs.append(
            {
                "split": s,
                "train": int(len(train)),
                "test": int(len(test)),
                "mean_class_recall": float(balanced_accuracy_score(truth, pred)),
                "accuracy": float(np.mean(pred == truth)),
                "expected_calibration_error": expected_calibration_error(probs, truth),
                "log_loss": float(log_loss(truth, probs, labels=np.arange(k))),
                "cv_mean": report.selection["cv_mean"],
                "cv_std": report.selection["cv_std"],
                "choice": report.describe(),
                "seconds_select_and_fit": seconds,
            }
        )
        r = runs[-1]
        print(
            f"split {s}: mean class recall {r['mean_class_recall']:.4f}, ECE {r['expected_calibration_error']:.3f}, "
            f"log loss {r['log_loss']:.3f}; "
            f"{report.describe()} ({seconds:.1f} s)"
        )
    recalls = [r["mean_class_recall"] for r in runs]
    result = {
        "data": [str(d) for d in args.data],
        "classes": k,
        "photos": len(data),
        "photos_extracted": len(z["ok"]),
        "train_per_class": args.train_per_class,
        "test_per_class": args.test_per_class,
        "mean_class_recall": float(np.mean(recalls)),
        "mean_class_recall_std": float(np.std(recalls)),
        "mean_expected_calibration_error": float(np.mean([r["expected_calibration_error"] for r in runs])),
        "mean_log_loss": float(np.mean([r["log_loss"] for r in runs])),
        "seconds_extract": float(z["seconds"]),
        "seconds_select_median": float(np.median([r["seconds_select_and_fit"] for r in runs])),
        "runs": runs,
        "features": model.features_spec.describe(),
    }
    write_results(args.out, result, __file__, argv)
    print(
        f"mean class recall {100 * result['mean_class_recall']:.2f} ± {100 * result['mean_class_recall_std']:.2f} % "
        f"over {args.splits} splits; extraction {result['seconds_extract']:.0f} s, selection + refit "
        f"{result['seconds_select_median']:.1f} s per split (median)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
