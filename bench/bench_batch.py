"""Conv-stack throughput (img/s) against the batch size, per image size and precision, on this CPU.

Which batch size the library should use (``vggtransfer/core/runtime.py``: a pixel budget per batch) depends on the
CPU: AMX tiles and AVX-512 kernels fill their caches differently. For each size (square inputs: the classes'
default scales 112, 224 and 320 px) and precision, every batch size in the grid is timed on the same images in one
worker process per precision (``bench/throughput_worker.py``), interleaved per repetition; the figures are medians
of the repetitions, and each batch size's ratio to the library's default batch for that size is taken within a
repetition.

    python bench/bench_batch.py [--reps 3] [--precisions bf16,fp32] [--name batch_sizes]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_throughput import Worker  # noqa: E402
from bench.common import environment, fmt_env, median, quiet_tf, save  # noqa: E402

#: size -> (images per timed call, batch sizes)
GRID = {112: (256, [16, 32, 64, 128]), 224: (64, [4, 8, 16, 32]), 320: (32, [2, 4, 8, 16])}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--precisions", default="bf16,fp32")
    p.add_argument("--threads", type=int, default=0, help="0 = the library default (all cores)")
    p.add_argument("--name", default="batch_sizes", help="results file bench/results/NAME.json")
    args = p.parse_args(argv)
    quiet_tf()
    from vggtransfer.core.runtime import default_batch_size

    env = environment()
    precisions = args.precisions.split(",")
    workers = {pr: Worker(f"vggtransfer-{pr}", args.threads) for pr in precisions}
    times: dict = {pr: {size: {b: [] for b in GRID[size][1]} for size in GRID} for pr in precisions}
    for rep in range(args.reps):
        for size, (n, batches) in GRID.items():
            for pr in precisions:
                for b in batches if rep % 2 == 0 else batches[::-1]:
                    times[pr][size][b].append(workers[pr].ask(size=size, batch=b, images=n)["seconds"])
        print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr, flush=True)
    for w in workers.values():
        w.close()
    rows = []
    for pr in precisions:
        for size, (n, batches) in GRID.items():
            default = default_batch_size(size)
            base = times[pr][size].get(default)
            for b in batches:
                row = {"precision": pr, "size": size, "batch": b, "img_s": median([n / t for t in times[pr][size][b]])}
                row["seconds_all"] = times[pr][size][b]
                row["library_default"] = b == default
                if base:
                    row["vs_default"] = median([t0 / t for t0, t in zip(base, times[pr][size][b])])
                rows.append(row)
    result = {"env": env, "reps": args.reps, "grid": {str(k): v for k, v in GRID.items()}, "rows": rows}
    path = save(args.name, result)
    print(f"Environment: {fmt_env(env)}; medians of {args.reps} interleaved repetitions.\n")
    print("| precision | size | batch | img/s | vs the library's default batch |")
    print("|---|---|---|---|---|")
    for r in rows:
        mark = " (default)" if r["library_default"] else ""
        vs = f"{r['vs_default']:.2f}x" if "vs_default" in r else "-"
        print(f"| {r['precision']} | {r['size']} | {r['batch']}{mark} | {r['img_s']:.1f} | {vs} |")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
