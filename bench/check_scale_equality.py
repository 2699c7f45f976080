#!/usr/bin/env python
"""The 800 tiger/cat photos extracted three ways, same precision: one process (``vggtransfer extract``),
``--workers 2`` and ``--ray --workers 2``; the stores must hold the same paths, labels and order, and features within
1e-6 relative. Writes bench/results/scale_equality.json.

    python bench/check_scale_equality.py [--precision auto]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, TIGER_CAT, WEIGHTS, write_results  # noqa: E402


def read(path):
    import h5py

    with h5py.File(path, "r") as fh:
        return ({k: fh[k][()] for k in ("features", "labels", "paths", "ok", "done")}, json.loads(fh.attrs["config"]))


def main(argv=None) -> int:
    from vggtransfer.cli import main as cli

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, default=TIGER_CAT)
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--precision", default="auto")
    p.add_argument("--out", type=Path, default=RESULTS / "scale_equality.json")
    args = p.parse_args(argv)
    common = [str(args.data), "--weights", str(args.weights), "--precision", args.precision, "-q"]
    result = {"precision": args.precision}
    with tempfile.TemporaryDirectory(prefix="scale_eq_") as tmp:
        stores = {
            "one process": Path(tmp) / "one.h5",
            "--workers 2": Path(tmp) / "workers.h5",
            "--ray --workers 2": Path(tmp) / "ray.h5",
        }
        extra = {"one process": [], "--workers 2": ["--workers", "2"], "--ray --workers 2": ["--ray", "--workers", "2"]}
        for name, store in stores.items():
            assert cli(["extract", *common, "--store", str(store), *extra[name]]) == 0, name
        ref, ref_cfg = read(stores["one process"])
        for name in ("--workers 2", "--ray --workers 2"):
            got, cfg = read(stores[name])
            same = {k: bool(np.array_equal(ref[k], got[k])) for k in ("labels", "paths", "ok", "done")}
            diff = got["features"].astype(np.float64) - ref["features"]
            scale = np.abs(ref["features"]).max(axis=1, keepdims=True)
            result[name] = {
                **same,
                "config_equal": cfg == ref_cfg,
                "rows": int(len(ref["paths"])),
                "bitwise_equal_rows": int(np.all(diff == 0, axis=1).sum()),
                "max_abs_diff_over_row_max": float(np.max(np.abs(diff) / np.maximum(scale, 1e-30))),
                "max_row_norm_rel": float(
                    np.max(np.linalg.norm(diff, axis=1) / np.maximum(np.linalg.norm(ref["features"], axis=1), 1e-30))
                ),
            }
            print(name, result[name], flush=True)
    write_results(args.out, result, __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
