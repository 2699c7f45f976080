#!/usr/bin/env python
"""Exploration (not a test, not a default's proof): would a linear SVM (hinge loss, the VGG paper's classifier for
its transfer experiments: Simonyan & Zisserman 2015, section 4.1) do better than what ``--recipe auto`` fits?

For each seed the library's own selection runs on the default features (``AutoClassifier.train_on_features``: block
group x model family x regularisation, families averaged); then, on the group it chose and the same 5 folds (copies
kept in one fold, ``models.folds``), scikit-learn's ``LinearSVC`` over a C grid, and the library's logistic
regression alone for reference. Everything is cross-validation on the training data; the held-out column (the SVM
at its CV-best C, refitted on all training rows) is printed beside and chooses nothing.

SIGNS (1,080 training JPEGs; held out: test_signs.h5) and ants/bees (train; held out: val), the default features
(pool3-5 avg+max at 112+224+320 px), precision auto. ``--cache DIR`` reuses the features that
``bench/bench_auto_datasets.py --cache DIR`` extracted (the same key), else extracts them.

    python bench/explore_svm.py [--cache DIR] [--out bench/results/explore_svm.json]

What it informed: BENCHMARKS.md, "Not adopted: a linear SVM".
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_auto_datasets import _cached, _extract, ants_bees_items, signs_items  # noqa: E402
from bench.common import RESULTS, WEIGHTS, write_results  # noqa: E402

SVM_CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def cv_accuracy(make, x, y, folds) -> tuple:
    """Mean and per-fold accuracy of ``make()`` fitted on each fold's training rows."""
    scores = []
    for tr, te in folds:
        scores.append(float(np.mean(make().fit(x[tr], y[tr]).predict(x[te]) == y[te])))
    return float(np.mean(scores)), scores


def explore(name, items, weights, cache, seeds) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    from vggtransfer.features.spec import normalise_blocks
    from vggtransfer.models.auto import AutoClassifier
    from vggtransfer.models.folds import copy_groups, make_folds
    from vggtransfer.models.select import LOGREG_CS, columns
    from vggtransfer.models.solvers import logreg_path

    train_paths, train_labels, test_images, test_labels, classes = items
    model = AutoClassifier(weights, classes=classes)
    z = _cached(model, name, cache, lambda: dict(zip(
        ("feats", "ok", "errors", "test_feats", "test_ok", "t_train", "t_test"),
        _extract(model, train_paths, test_images),
    )))  # fmt: skip
    feats, test_feats = z["feats"], z["test_feats"]
    y, y_test = np.asarray(train_labels)[z["ok"]], np.asarray(test_labels)[z["test_ok"]]
    runs = []
    for seed in seeds:
        t0 = time.perf_counter()
        report = model.train_on_features(feats, y, seed=seed)
        auto_seconds = time.perf_counter() - t0
        auto_test = float(np.mean(model.predict_features(test_feats).argmax(1) == y_test))
        s = report.selection
        blocks = model.features_spec.blocks(model.feature_config["arch"])
        x = normalise_blocks(feats, blocks, model.power, only=model.fitted["blocks"])
        xt = normalise_blocks(test_feats, blocks, model.power, only=model.fitted["blocks"])
        assert x.shape[1] == len(columns(blocks, model.fitted["blocks"]))
        copies = copy_groups(normalise_blocks(feats, blocks, model.power))  # as auto finds them: on every block
        folds = make_folds(y, "classification", s["folds"], seed, groups=copies)
        t0 = time.perf_counter()
        svm = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for c in SVM_CS:
                svm[c] = cv_accuracy(lambda: LinearSVC(C=c, max_iter=20000), x, y, folds)
        svm_seconds = time.perf_counter() - t0
        logreg = np.zeros((len(LOGREG_CS), len(y), len(classes)))
        for tr, te in folds:
            logreg[:, te] = logreg_path(x[tr], y[tr], x[te], LOGREG_CS, len(classes), None, seed)
        lr = {
            c: float(np.mean([np.mean(o[te].argmax(1) == y[te]) for _, te in folds])) for c, o in zip(LOGREG_CS, logreg)
        }
        best_c = max(svm, key=lambda c: svm[c][0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            svm_test = float(np.mean(LinearSVC(C=best_c, max_iter=20000).fit(x, y).predict(xt) == y_test))
        run = {
            "seed": seed,
            "auto_choice": report.describe(),
            "auto_cv": s["cv_mean"],
            "auto_test": auto_test,
            "auto_seconds": auto_seconds,
            "svm_cv": {str(c): v[0] for c, v in svm.items()},
            "svm_best_c": best_c,
            "svm_best_cv": svm[best_c][0],
            "svm_best_cv_folds": svm[best_c][1],
            "svm_seconds": svm_seconds,
            "logreg_cv": {str(c): v for c, v in lr.items()},
            "svm_test_at_cv_c": svm_test,
        }
        runs.append(run)
        print(
            f"{name} seed {seed}: auto CV {100 * s['cv_mean']:.2f} % ({s['group']}, {s['model']}); SVM best CV "
            f"{100 * svm[best_c][0]:.2f} % at C {best_c:g}; logistic regression best CV {100 * max(lr.values()):.2f} %"
            f" | held out: auto {100 * auto_test:.2f} %, SVM {100 * svm_test:.2f} %",
            flush=True,
        )
    return {
        "train_items": int(len(y)),
        "mean_auto_cv": float(np.mean([r["auto_cv"] for r in runs])),
        "mean_svm_best_cv": float(np.mean([r["svm_best_cv"] for r in runs])),
        "runs": runs,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--cache", type=Path, default=None, help="features extracted by bench_auto_datasets.py --cache")
    p.add_argument("--out", type=Path, default=RESULTS / "explore_svm.json")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    result = {
        "signs": explore("signs", signs_items(), args.weights, args.cache, seeds),
        "ants_bees": explore("ants/bees", ants_bees_items(), args.weights, args.cache, seeds),
    }
    write_results(args.out, result, __file__, argv)
    for k in ("signs", "ants_bees"):
        r = result[k]
        print(f"{k}: auto CV {100 * r['mean_auto_cv']:.2f} %, SVM best CV {100 * r['mean_svm_best_cv']:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
