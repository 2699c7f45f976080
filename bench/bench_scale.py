#!/usr/bin/env python
"""Scale-out on this machine: sharded extraction with 1 worker x 1 thread vs 2 workers x 1 thread (local spawn pool),
and Ray actors vs the local pool at 2 workers, same images, interleaved runs, medians.

Each run is ``vggtransfer.scale.shards.build_store_sharded`` into a fresh store (default block features, precision auto),
timed end to end: worker start-up (TensorFlow import, weights, graph) included. Ray itself is started once before
the runs (a cluster is already running when a user joins it); its actors are started inside each timed run.
Also reported: the steady-state rate, from the workers' own per-shard timings.

    python bench/bench_scale.py               # results: bench/results/scale.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

from bench.common import RESULTS, TIGER_CAT, WEIGHTS, write_results  # noqa: E402


def main(argv=None) -> int:
    from train_length_regressor import find_images

    from vggtransfer.data import datasets
    from vggtransfer.models.defaults import FEATURES
    from vggtransfer.scale.shards import ExtractorSpec, build_store_sharded

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=TIGER_CAT)
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--images", type=int, default=192)
    p.add_argument("--shard-size", type=int, default=16)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = p.parse_args(argv)

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    paths, labels = find_images(args.data, args.images // 2)
    ds = datasets.from_paths(paths, labels, verify=False)
    spec = ExtractorSpec(str(args.weights), features=FEATURES.to_dict(), precision="auto")
    configs = {
        "local 1x1": dict(workers=1, threads=1),
        "local 2x1": dict(workers=2, threads=1),
        "ray 2x1": dict(workers=2, threads=1, use_ray=True),
    }
    runs = {name: [] for name in configs}
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        for rep in range(args.reps):
            order = list(configs) if rep % 2 == 0 else list(reversed(configs))
            for name in order:
                store = Path(tmp) / f"{name.replace(' ', '_')}_{rep}.h5"
                t = time.perf_counter()
                report = build_store_sharded(
                    store, ds, spec, shard_size=args.shard_size, progress=False, **configs[name]
                )
                wall = time.perf_counter() - t
                rate = sum(st["rows"] for st in report.computed) / wall
                per_worker = {}
                for st in report.computed:
                    w = per_worker.setdefault(st["worker"], [0, 0.0])
                    w[0] += st["rows"]
                    w[1] += st["seconds"]
                steady = sum(rows / sec for rows, sec in per_worker.values())
                runs[name].append(
                    {"wall_s": wall, "img_s": rate, "steady_img_s": steady, "workers_seen": len(per_worker)}
                )
                print(
                    f"rep {rep} {name}: {wall:.1f} s, {rate:.2f} img/s end to end, {steady:.2f} img/s steady",
                    flush=True,
                )
                shutil.rmtree(store.with_name(store.name + ".shards"), ignore_errors=True)
                store.unlink()
    ray.shutdown()
    med = {
        name: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "img_s", "steady_img_s")}
        for name, rs in runs.items()
    }
    result = {
        "images": len(ds),
        "shard_size": args.shard_size,
        "medians": med,
        "runs": runs,
        "efficiency_2_workers": med["local 2x1"]["img_s"] / med["local 1x1"]["img_s"] / 2,
        "efficiency_2_workers_steady": med["local 2x1"]["steady_img_s"] / med["local 1x1"]["steady_img_s"] / 2,
        "ray_overhead_vs_local": med["ray 2x1"]["wall_s"] / med["local 2x1"]["wall_s"] - 1,
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("runs", "env")}, indent=1))
    write_results(args.out, result, __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
