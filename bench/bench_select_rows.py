#!/usr/bin/env python
"""Selection's time and memory on a large training set, with and without the cross-validation sample
(``select_rows``): ``AutoClassifier.train_on_features`` on synthetic rows shaped like the classes' default features
(7,680 numbers: pool3-5 avg+max at 3 scales), each a class prototype blended into gamma noise, in a fresh process
per configuration (peak RSS is the process's). Writes ``bench/results/select_rows_<rows>_<select_rows>.json``.

    python bench/bench_select_rows.py --rows 10000 --classes 10                      # the default sample (5,000)
    python bench/bench_select_rows.py --rows 10000 --classes 10 --select-rows 10000  # no sample: every row
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, WEIGHTS, cpu_model, write_results  # noqa: E402


def main(argv=None) -> int:
    from vggtransfer.core.runtime import describe_precision
    from vggtransfer.models.auto import AutoClassifier
    from vggtransfer.models.defaults import AUTO, FEATURES_CLASSES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10000)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--select-rows", type=int, default=AUTO.select_rows)
    p.add_argument("--blend", type=float, default=0.4, help="weight of the class prototype in each row")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.out = args.out or RESULTS / f"select_rows_{args.rows}_{args.select_rows}.json"

    dim = FEATURES_CLASSES.dim("vgg16")
    rng = np.random.default_rng(0)
    y = rng.integers(0, args.classes, args.rows)
    protos = rng.gamma(1.0, 1.0, (args.classes, dim)).astype(np.float32)
    x = (1 - args.blend) * rng.gamma(1.0, 1.0, (args.rows, dim)).astype(np.float32) + args.blend * protos[y]
    model = AutoClassifier(str(WEIGHTS), classes=[str(i) for i in range(args.classes)], select_rows=args.select_rows)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    report = model.train_on_features(x, y, seed=0, log=lambda m: print(m, flush=True))
    seconds = time.perf_counter() - t0
    result = {
        "rows": args.rows,
        "classes": args.classes,
        "dim": dim,
        "select_rows": args.select_rows,
        "rows_cross_validated": report.selection["rows"],
        "choice": report.describe(),
        "seconds_select": report.seconds_select,
        "seconds_refit": report.seconds_refit,
        "seconds_total": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_mib_before_training": rss_before,
        "precision": describe_precision("auto"),
        "cpu": cpu_model(),
    }
    print(result, flush=True)
    print(write_results(args.out, result, __file__, argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
