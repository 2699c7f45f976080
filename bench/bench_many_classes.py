#!/usr/bin/env python
"""Selection time against extraction time on a set shaped like the 102-class benchmark (30 photos x 102 classes =
3,060 training photos), with the default classes features (``vggtransfer train`` on a class folder).

This project has no 102-class photo set, so the two halves are measured separately:

- **extraction**: the default block features of 3,060 real photos (the tiger/cat and ants/bees photos, cycled: every
  file is decoded and run again, nothing is cached);
- **selection + refit + calibration**: ``AutoClassifier.train_on_features`` on those real feature rows with 102
  classes of 30 made from them: each row is blended with its class's prototype (the row of another photo),
  ``(1 - blend) * own + blend * prototype``, so the rows keep real VGG feature statistics while the classes are as
  separable as ``--blend`` makes them (the CV accuracy is reported beside; 0.35 lands near the paper's ~90 %).

Writes bench/results/many_classes.json.

    python bench/bench_many_classes.py
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    HYMENOPTERA,
    TIGER_CAT,
    WEIGHTS,
    add_features_option,
    cached,
    chosen_features,
    features_key,
    results_file,
    write_results,
)


def photos() -> list:
    exts = {".jpg", ".jpeg", ".png"}
    found = [p for root in (TIGER_CAT, HYMENOPTERA) for p in sorted(root.rglob("*")) if p.suffix.lower() in exts]
    if not found:
        raise SystemExit(f"no photos under {TIGER_CAT} or {HYMENOPTERA}")
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--classes", type=int, default=102)
    p.add_argument("--per-class", type=int, default=30)
    p.add_argument("--blend", type=float, default=0.35)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--cache", type=Path, default=None, help="an .npz keeping the extracted features for a re-run")
    add_features_option(p)
    args = p.parse_args(argv)
    args.out = args.out or results_file("many_classes", args)
    from vggtransfer.core.runtime import describe_precision
    from vggtransfer.models.auto import AutoClassifier

    n = args.classes * args.per_class
    paths = [str(q) for q in itertools.islice(itertools.cycle(photos()), n)]
    classes = tuple(f"c{i:03d}" for i in range(args.classes))
    model = AutoClassifier(args.weights, classes=classes, features=chosen_features(args))
    print(model.features_spec.describe(), flush=True)
    fx = model.attach()

    def extract():
        t0 = time.perf_counter()
        feats, _, errors = fx.extract_paths(paths, progress=False)
        if errors:
            raise SystemExit(f"{len(errors)} photos could not be read: {errors[:3]}")
        return {"feats": feats, "seconds": time.perf_counter() - t0}

    z = cached(args.cache, features_key(model, f"{n} photos"), extract)
    feats, t_extract = z["feats"], float(z["seconds"])
    print(f"extraction of {n} photos: {t_extract:.1f} s", flush=True)

    rng = np.random.default_rng(args.seed)
    y = np.repeat(np.arange(args.classes), args.per_class)
    rows = rng.permutation(len(feats))
    prototypes = feats[rng.choice(len(feats), args.classes, replace=False)]
    x = (1 - args.blend) * feats[rows] + args.blend * prototypes[y]
    lines = []
    t0 = time.perf_counter()
    report = model.train_on_features(x, y, seed=args.seed, log=lambda s: (lines.append(s), print(s, flush=True)))
    t_total = time.perf_counter() - t0
    result = {
        "photos": n,
        "classes": args.classes,
        "blend": args.blend,
        "features": model.features_spec.describe(),
        "precision": describe_precision("auto"),
        "seconds_extract": t_extract,
        "seconds_select": report.seconds_select,
        "seconds_refit_and_calibrate": t_total - report.seconds_select,
        "seconds_select_fit_total": t_total,
        "ratio_selection_to_extraction": report.seconds_select / t_extract,
        "ratio_total_to_extraction": t_total / t_extract,
        "cv_accuracy": report.selection["cv_mean"],
        "choice": report.describe(),
        "log": lines,
    }
    write_results(args.out, result, __file__, argv)
    print(
        f"extraction {t_extract:.0f} s; selection {report.seconds_select:.0f} s "
        f"({result['ratio_selection_to_extraction']:.2f}x); with refit and calibration {t_total:.0f} s "
        f"({result['ratio_total_to_extraction']:.2f}x); CV accuracy {100 * report.selection['cv_mean']:.1f} %"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
