#!/usr/bin/env python
"""Peak memory of ``vggtransfer train --store`` (the default recipe, auto) on a large block store: the features of
the rows are read in chunks and only the winner's blocks are held, against a previous release that loaded the store
and normalised every block of every row at once. Each run is a fresh process under ``/usr/bin/time -v``.

The store holds synthetic rows shaped like the classes' default features (7,680 numbers: pool3-5 avg+max at 112,
224 and 320 px), each a class prototype blended into gamma noise, written once in the store format (``--store``
keeps it between runs). ``--before DIR`` also runs a checkout of another commit (e.g. a ``git worktree``) on the
same store in the same session. Writes ``bench/results/train_store_<rows>.json``.

    python bench/bench_train_store.py --rows 40000 --select-rows 1000 --before /tmp/before_store
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, WEIGHTS, cpu_model, time_v, write_results  # noqa: E402


def synthetic_store(path: Path, rows: int, classes: int, blend: float, seed: int = 0) -> Path:
    """A complete block store of ``rows`` synthetic rows, written in chunks (never all in memory)."""
    import h5py

    from vggtransfer.data.datasets import Dataset
    from vggtransfer.data.store import _create, items_digest
    from vggtransfer.models.auto import AutoClassifier
    from vggtransfer.models.defaults import FEATURES_CLASSES

    names = tuple(str(i) for i in range(classes))
    model = AutoClassifier(str(WEIGHTS), classes=names, features=FEATURES_CLASSES)
    config = model.attach().config  # the real weights' fingerprint and the default spec, as `extract` writes them
    model.close()
    dim = FEATURES_CLASSES.dim("vgg16")
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, rows)
    ds = Dataset([f"synthetic/{i:07d}.jpg" for i in range(rows)], y, names, source="synthetic")
    tmp = path.with_name(path.name + ".part")
    _create(tmp, ds, config, dim, 1024, items_digest(ds))
    protos = rng.gamma(1.0, 1.0, (classes, dim)).astype(np.float32)
    with h5py.File(tmp, "r+") as fh:
        for a in range(0, rows, 4096):
            b = min(rows, a + 4096)
            noise = rng.gamma(1.0, 1.0, (b - a, dim)).astype(np.float32)
            fh["features"][a:b] = (1 - blend) * noise + blend * protos[y[a:b]]
        fh["ok"][:] = True
        fh["done"][:] = True
    os.replace(tmp, path)
    return path


def run_train(checkout: Path, store: Path, select_rows: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "vggtransfer.cli", "train", "--store", str(store)]
        cmd += ["--model", str(Path(tmp) / "m"), "--select-rows", str(select_rows), "--quiet"]
        env = dict(os.environ, PYTHONPATH=str(checkout), VGGTRANSFER_WEIGHTS=str(WEIGHTS), TF_CPP_MIN_LOG_LEVEL="2")
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
    if p.returncode != 0:
        raise SystemExit(f"{checkout}: exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    lines = [line for line in p.stdout.splitlines() if "chose" in line]
    return {"checkout": str(checkout), **time_v(p.stderr), "result": lines[-1] if lines else p.stdout[-500:]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=40000)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--blend", type=float, default=0.4, help="weight of the class prototype in each row")
    p.add_argument("--select-rows", type=int, default=1000, help="train --select-rows (the CV sample)")
    p.add_argument("--store", type=Path, default=None, help="where the synthetic store is kept (made if missing)")
    p.add_argument("--before", type=Path, default=None, help="a checkout of another commit to run as well")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.out = args.out or RESULTS / f"train_store_{args.rows}.json"
    store = args.store or Path(tempfile.gettempdir()) / f"vggtransfer_bench_store_{args.rows}_{args.classes}.h5"
    if not store.exists():
        synthetic_store(store, args.rows, args.classes, args.blend)
    runs = {"now": run_train(ROOT, store, args.select_rows)}
    print(runs["now"], flush=True)
    if args.before is not None:
        runs["before"] = run_train(args.before, store, args.select_rows)
        print(runs["before"], flush=True)
    result = {
        "rows": args.rows,
        "classes": args.classes,
        "select_rows": args.select_rows,
        "store_gib": store.stat().st_size / 2**30,
        "runs": runs,
        "cpu": cpu_model(),
    }
    if "before" in runs:
        result["peak_rss_ratio_now_vs_before"] = runs["now"]["peak_rss_mib"] / runs["before"]["peak_rss_mib"]
    print(write_results(args.out, result, __file__, argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
