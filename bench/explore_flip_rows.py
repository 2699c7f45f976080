#!/usr/bin/env python
"""Exploration (not a test, not a default's proof): do horizontally flipped copies of the training photos, as extra
training rows, lift the default auto classifier on frozen block features? Judged by outer cross-validation on the
training data alone; the held-out test figure is printed beside and chooses nothing.

Feature-level augmentation is the other use of the flip (Chatfield et al. 2014, "Return of the devil in the
details"; Razavian et al. 2014): the library's ``FeatureSpec(flip=True)`` *averages* an image's features with its
mirror image's (explored in ``bench/explore_scales.py``: no gain in CV); here the mirror image is a training row of
its own, and a prediction averages the probabilities of the photo and its mirror image (test-time augmentation).

Three procedures, each scored on the same outer folds of the training set (5 folds, copies of one file kept in one
fold; the outer training rows alone choose and fit, as ``train --nested-cv`` does):

- ``plain``: the default ``vggtransfer train`` (auto on the photos' rows).
- ``tta``: the same model; a held-out photo's probabilities averaged with its mirror image's.
- ``flip_rows``: auto fitted on the photos' rows and their mirror images' rows (a photo and its mirror image in one
  inner fold: they are copies for cross-validation), predicted as ``tta``.

The mirror image's views are the photo's prepared views reversed left to right, as ``FeatureSpec(flip=True)`` makes
them. Features are cached (``--cache DIR``). Writes ``bench/results/explore_flip_rows.json``.

    python bench/explore_flip_rows.py --cache /tmp/flipcache [--seeds 0,1,2] [--sets ants_bees,signs]

``--protocol N``: instead, the regime of the VGG paper's Caltech protocol on the *training* set alone (the test set
takes no part): N random splits of it into 30 photos per class to train on and up to 50 per class of the rest to
score, each procedure fitted on the 30 per class. Writes ``bench/results/explore_flip_rows_protocol.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_auto_datasets import ants_bees_items, signs_items  # noqa: E402
from bench.common import RESULTS, WEIGHTS, cached, features_key, write_results  # noqa: E402


def _features(model, name, paths_or_arrays, cache) -> dict:
    """Rows of each item and of its mirror image: ``{'feats', 'flipped', 'ok'}`` (items that decode)."""
    from vggtransfer.data.images import load_views

    fx = model.attach()
    arrays = isinstance(paths_or_arrays, np.ndarray)

    def views(item, mirror):
        v = fx.views_of_array(item) if arrays else load_views(item, fx.spec.scales, fx.spec.view)
        return [x[:, ::-1] for x in v] if mirror else v

    def extract():
        out = {}
        for key, mirror in (("feats", False), ("flipped", True)):
            feats, ok, _ = fx._collect(
                fx.iter_views(list(paths_or_arrays), lambda item, m=mirror: views(item, m)),
                len(paths_or_arrays),
                False,
                key,
            )
            out[key], out["ok"] = feats, np.asarray(ok)
        return out

    path = None if cache is None else cache / f"{name}.npz"
    return cached(path, features_key(model, name + " with mirror images"), extract)


def _fit(model, x, y, seed, groups=None):
    """Auto's fit on rows ``x``; ``groups`` (one id per row) replaces the copy groups its folds keep together."""
    import vggtransfer.models.auto as auto

    original = auto.copy_groups
    if groups is not None:
        auto.copy_groups = lambda z: np.asarray(groups) if len(z) == len(groups) else original(z)
    try:
        report = model.train_on_features(x, y, seed=seed)
    finally:
        auto.copy_groups = original
    return report.describe()


def compare(model, train: dict, y, test: dict, y_test, seeds, folds: int = 5) -> dict:
    """The three procedures on the same outer folds, per seed; and each fitted on every training row, on the test."""
    from vggtransfer.models.folds import copy_groups, make_folds

    x, xf = train["feats"], train["flipped"]
    g = copy_groups(x)
    g = np.arange(len(y)) if g is None else g
    runs = []
    for seed in seeds:
        outer = make_folds(y, "classification", folds, seed + 1, groups=g)
        scores: dict = {"plain": [], "tta": [], "flip_rows": []}
        choices: dict = {"plain": [], "flip_rows": []}
        t = {"plain": 0.0, "flip_rows": 0.0}
        for tr, te in outer:
            t0 = time.perf_counter()
            choices["plain"].append(_fit(model, x[tr], y[tr], seed))
            t["plain"] += time.perf_counter() - t0
            p, pf = model.predict_features(x[te]), model.predict_features(xf[te])
            scores["plain"].append(float(np.mean(p.argmax(1) == y[te])))
            scores["tta"].append(float(np.mean((p + pf).argmax(1) == y[te])))
            t0 = time.perf_counter()
            aug_groups = np.concatenate([g[tr], g[tr]])
            choices["flip_rows"].append(
                _fit(model, np.concatenate([x[tr], xf[tr]]), np.concatenate([y[tr], y[tr]]), seed, aug_groups)
            )
            t["flip_rows"] += time.perf_counter() - t0
            p, pf = model.predict_features(x[te]), model.predict_features(xf[te])
            scores["flip_rows"].append(float(np.mean((p + pf).argmax(1) == y[te])))
        test_scores = {}
        _fit(model, x, y, seed)
        p, pf = model.predict_features(test["feats"]), model.predict_features(test["flipped"])
        test_scores["plain"] = float(np.mean(p.argmax(1) == y_test))
        test_scores["tta"] = float(np.mean((p + pf).argmax(1) == y_test))
        _fit(model, np.concatenate([x, xf]), np.concatenate([y, y]), seed, np.concatenate([g, g]))
        p, pf = model.predict_features(test["feats"]), model.predict_features(test["flipped"])
        test_scores["flip_rows"] = float(np.mean((p + pf).argmax(1) == y_test))
        run = {
            "seed": seed,
            "outer_cv": {k: float(np.mean(v)) for k, v in scores.items()},
            "outer_cv_folds": scores,
            "outer_choices": choices,
            "seconds_fit_outer": t,
            "test_choosing_nothing": test_scores,
        }
        runs.append(run)
        print(f"seed {seed}: outer CV {run['outer_cv']}; test {test_scores}; fit seconds {t}", flush=True)
    mean = {k: float(np.mean([r["outer_cv"][k] for r in runs])) for k in ("plain", "tta", "flip_rows")}
    return {"train_items": int(len(y)), "test_items": int(len(y_test)), "mean_outer_cv": mean, "runs": runs}


def protocol(model, train: dict, y, splits: int, per_class: int = 30, test_per_class: int = 50) -> dict:
    """The three procedures on ``splits`` random splits of the training rows (``per_class`` to fit, up to
    ``test_per_class`` of the rest of each class to score; mean class recall, as the Caltech protocol scores)."""
    x, xf = train["feats"], train["flipped"]
    out: dict = {"plain": [], "tta": [], "flip_rows": []}
    for s in range(splits):
        rng = np.random.default_rng(s)
        tr, te = [], []
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            tr.extend(idx[:per_class])
            te.extend(idx[per_class : per_class + test_per_class])
        tr, te = np.asarray(tr), np.asarray(te)

        def recall(prob):
            pred = prob.argmax(1)
            return float(np.mean([np.mean(pred[y[te] == c] == c) for c in np.unique(y[te])]))

        _fit(model, x[tr], y[tr], s)
        p, pf = model.predict_features(x[te]), model.predict_features(xf[te])
        out["plain"].append(recall(p))
        out["tta"].append(recall(p + pf))
        _fit(model, np.concatenate([x[tr], xf[tr]]), np.concatenate([y[tr], y[tr]]), s, np.tile(np.arange(len(tr)), 2))
        out["flip_rows"].append(recall(model.predict_features(x[te]) + model.predict_features(xf[te])))
        print(f"split {s}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in out.items()), flush=True)
    return {
        "splits": splits,
        "per_class": per_class,
        "mean_class_recall": {k: float(np.mean(v)) for k, v in out.items()},
        "std": {k: float(np.std(v)) for k, v in out.items()},
        "per_split": out,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--sets", default="ants_bees,signs")
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--protocol", type=int, default=0, help="this many 30-per-class splits of the training set instead")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.out = args.out or RESULTS / ("explore_flip_rows_protocol.json" if args.protocol else "explore_flip_rows.json")
    from dataclasses import replace

    from vggtransfer.models.auto import AutoClassifier
    from vggtransfer.models.defaults import FEATURES_CLASSES

    seeds = [int(s) for s in args.seeds.split(",")]
    result = {}
    for name in args.sets.split(","):
        train_items, train_labels, test_items, test_labels, classes = (
            ants_bees_items() if name == "ants_bees" else signs_items()
        )
        # The photos' blocks alone (the mirror image's are extracted beside them here): the defaults before they
        # kept the mirror image (``FeatureSpec.mirror``), so that "plain" is the procedure without it.
        model = AutoClassifier(args.weights, classes=classes, features=replace(FEATURES_CLASSES, mirror=False))
        t0 = time.perf_counter()
        train = _features(model, f"{name}_train", train_items, args.cache)
        test = _features(model, f"{name}_test", test_items, args.cache)
        print(f"{name}: features {time.perf_counter() - t0:.0f} s ({model.features_spec.describe()})", flush=True)
        y, y_test = np.asarray(train_labels)[train["ok"]], np.asarray(test_labels)[test["ok"]]
        if args.protocol:
            result[name] = protocol(model, train, y, args.protocol)
            print(f"{name}: mean class recall {result[name]['mean_class_recall']}", flush=True)
        else:
            result[name] = compare(model, train, y, test, y_test, seeds)
            print(f"{name}: mean outer CV {result[name]['mean_outer_cv']}", flush=True)
        model.close()
    write_results(args.out, result, __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
