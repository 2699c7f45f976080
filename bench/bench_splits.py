#!/usr/bin/env python
"""The main job over several seeded splits: the default ``Vgg16`` (auto: block group and L2 by cross-validation,
calibrated) against the oracle, on the 400 + 400 tiger/cat photos.

Exactly the main job's protocol (``examples/train_length_regressor.py``: fake lengths drawn with the seed, a
stratified 20 % held out, never seen by selection or training), except that the block features of the 800 photos are
extracted once and shared by the splits (a photo's features do not depend on the split). Writes
``bench/results/splits.json``.

    python bench/bench_splits.py --data ../shared/data/morvan_tiger_kittycat/data --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))


def misranked(is_tiger, pred, paths, n: int = 3) -> dict:
    """The photos that cost the AUC most: the ``n`` cats predicted longest and tigers predicted shortest (name and
    prediction), and the AUC without the single most costly one (a photo's cost: the cat-tiger pairs it puts in the
    wrong order). Says whether one photo, e.g. a mislabelled one, drives a split's AUC."""
    from sklearn.metrics import roc_auc_score

    is_tiger, pred = np.asarray(is_tiger), np.asarray(pred)
    cats, tigers = np.flatnonzero(~is_tiger), np.flatnonzero(is_tiger)
    cost = np.zeros(len(pred))
    cost[cats] = [(pred[tigers] < pred[i]).sum() + 0.5 * (pred[tigers] == pred[i]).sum() for i in cats]
    cost[tigers] = [(pred[cats] > pred[i]).sum() + 0.5 * (pred[cats] == pred[i]).sum() for i in tigers]
    worst = int(np.argmax(cost))
    keep = np.arange(len(pred)) != worst

    def name(i):
        return "/".join(Path(paths[i]).parts[-2:])

    return {
        "cats_predicted_longest": [[name(i), round(float(pred[i]), 1)] for i in cats[np.argsort(-pred[cats])][:n]],
        "tigers_predicted_shortest": [
            [name(i), round(float(pred[i]), 1)] for i in tigers[np.argsort(pred[tigers])][:n]
        ],
        "most_misranked_photo": name(worst),
        "most_misranked_photo_pairs": float(cost[worst]),
        "auc_without_most_misranked_photo": float(roc_auc_score(is_tiger[keep], pred[keep])),
    }


def main(argv=None) -> int:
    from sklearn.metrics import roc_auc_score
    from train_length_regressor import fake_lengths, find_images

    from bench.common import add_features_option, chosen_features, cpu_model, results_file, write_results
    from vggtransfer import Vgg16
    from vggtransfer.core.runtime import describe_precision
    from vggtransfer.data.splits import split_indices

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--weights", default=None)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--precision", default="auto")
    add_features_option(p)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.out = args.out or results_file("splits", args)

    paths, labels = find_images(args.data, 400)
    is_tiger = np.array([label == "tiger" for label in labels])
    model = Vgg16(args.weights, precision=args.precision, features=chosen_features(args))
    print(model.features_spec.describe(), flush=True)
    t0 = time.perf_counter()
    feats, ok, errors = model.attach().extract_paths(paths)
    seconds_features = time.perf_counter() - t0
    if errors:
        print(f"{len(errors)} unreadable photos left out", file=sys.stderr)
    paths = [paths[i] for i in ok]
    is_tiger = is_tiger[ok]
    labels = [labels[i] for i in ok]
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        y = fake_lengths(labels, seed)
        train, test = split_indices(len(paths), 0.2, seed, is_tiger)
        t1 = time.perf_counter()
        report = model.train_on_features(feats[train], y[train], seed=seed)
        seconds = time.perf_counter() - t1
        pred = model.predict_features(feats[test])
        class_mean = {t: y[train][is_tiger[train] == t].mean() for t in (True, False)}
        oracle = np.array([class_mean[t] for t in is_tiger[test]])
        rmse = float(np.sqrt(np.mean((pred - y[test]) ** 2)))
        oracle_rmse = float(np.sqrt(np.mean((oracle - y[test]) ** 2)))
        run = {
            "seed": seed,
            "rmse": rmse,
            "oracle_rmse": oracle_rmse,
            "ratio": rmse / oracle_rmse,
            "auc": float(roc_auc_score(is_tiger[test], pred)),
            "choice": report.describe(),
            "calibration": report.calibration.get("kind"),
            "seconds_select_and_fit": seconds,
            "mean_pred_cat": float(pred[~is_tiger[test]].mean()),
            "mean_pred_tiger": float(pred[is_tiger[test]].mean()),
            **misranked(is_tiger[test], pred, [paths[i] for i in test]),
        }
        runs.append(run)
        print(
            f"seed {seed}: ratio {run['ratio']:.3f}, AUC {run['auc']:.4f}, mean prediction cat "
            f"{run['mean_pred_cat']:.1f} / tiger {run['mean_pred_tiger']:.1f} cm; {run['choice']} ({seconds:.1f} s)",
            flush=True,
        )
    ratios = [r["ratio"] for r in runs]
    summary = {
        "mean_ratio": float(np.mean(ratios)),
        "worst_ratio": float(np.max(ratios)),
        "min_auc": float(min(r["auc"] for r in runs)),
        "mean_auc": float(np.mean([r["auc"] for r in runs])),
        "seconds_features_800": seconds_features,
        "precision": describe_precision(args.precision),
        "features": model.features_spec.describe(),
        "cpu": cpu_model(),
        "runs": runs,
    }
    print(
        f"mean ratio {summary['mean_ratio']:.3f}, worst {summary['worst_ratio']:.3f}, min AUC "
        f"{summary['min_auc']:.4f}; features of {len(paths)} photos {seconds_features:.0f} s"
    )
    write_results(args.out, summary, __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
