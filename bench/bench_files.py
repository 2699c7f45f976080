"""Benchmark 2: features straight from 800 JPEG files (read, decode, crop, resize, extract: the
FeatureExtractor.extract_paths pipeline) versus the same images already decoded in memory (extract_arrays).

The 800 files are split into ``--chunks`` chunks; for each chunk the two modes run back to back (order alternating
A B / B A), and the ratio files/memory is taken per chunk; the figure is the median ratio, and the totals.

    python bench/bench_files.py [--precision fp32] [--size 224]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import TIGER_CAT, WEIGHTS, environment, fmt_env, median, quiet_tf, save  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--chunks", type=int, default=5)
    p.add_argument("--limit", type=int, default=0, help="use only the first N files (0 = all 800)")
    args = p.parse_args(argv)
    quiet_tf()
    import numpy as np

    from vggtransfer.data.images import list_images, load_image
    from vggtransfer.features.extractor import FeatureExtractor

    env = environment()
    paths = list_images(TIGER_CAT / "tiger") + list_images(TIGER_CAT / "kittycat")
    if args.limit:
        paths = paths[: args.limit]
    # Decode cost alone, one thread (for the breakdown).
    t = time.perf_counter()
    arrays = np.stack([load_image(q, args.size) for q in paths])
    decode_s = time.perf_counter() - t
    fx = FeatureExtractor(WEIGHTS, pooling="avg", image_size=args.size, precision=args.precision)
    fx.extract_arrays(arrays[: fx.batch_size])  # warm-up
    chunks = np.array_split(np.arange(len(paths)), args.chunks)
    files_s, mem_s, ratios = [], [], []
    max_diff = 0.0
    for k, idx in enumerate(chunks):
        chunk_paths = [paths[i] for i in idx]
        modes = ("files", "memory") if k % 2 == 0 else ("memory", "files")
        got = {}
        for mode in modes:
            t = time.perf_counter()
            if mode == "files":
                feats, ok, errors = fx.extract_paths(chunk_paths, progress=False)
                assert len(ok) == len(idx) and not errors
            else:
                feats = fx.extract_arrays(arrays[idx])
            got[mode] = (time.perf_counter() - t, feats)
        files_s.append(got["files"][0])
        mem_s.append(got["memory"][0])
        ratios.append(got["memory"][0] / got["files"][0])
        max_diff = max(max_diff, float(np.abs(got["files"][1] - got["memory"][1]).max()))
        print(
            f"chunk {k + 1}/{len(chunks)}: files {len(idx) / files_s[-1]:.2f} img/s, memory "
            f"{len(idx) / mem_s[-1]:.2f} img/s",
            file=sys.stderr,
        )
    n = len(paths)
    result = {
        "env": env,
        "n": n,
        "size": args.size,
        "precision": fx.precision,
        "batch_size": fx.batch_size,
        "decode_only_1thread_s": decode_s,
        "files_s": files_s,
        "memory_s": mem_s,
        "files_img_s": n / sum(files_s),
        "memory_img_s": n / sum(mem_s),
        "ratio_median": median(ratios),
        "ratios": ratios,
        "ratio_total": sum(mem_s) / sum(files_s),
        "max_abs_feature_diff": max_diff,
    }
    fx.close()
    path = save(f"files_{args.precision}", result)
    print(report(result))
    print(f"wrote {path}")


def report(r: dict) -> str:
    return "\n".join(
        [
            f"Environment: {fmt_env(r['env'])}.",
            "",
            "| mode | images | seconds | img/s |",
            "|---|---|---|---|",
            f"| from files (read+decode+resize+extract) | {r['n']} | {sum(r['files_s']):.1f} | {r['files_img_s']:.2f} |",
            f"| in memory (extract only) | {r['n']} | {sum(r['memory_s']):.1f} | {r['memory_img_s']:.2f} |",
            "",
            f"Files / memory throughput: median of {len(r['ratios'])} interleaved chunks {r['ratio_median']:.1%} "
            f"(per chunk: {', '.join(f'{x:.1%}' for x in r['ratios'])}; totals {r['ratio_total']:.1%}). "
            f"{r['size']} px, {r['precision']}, batch {r['batch_size']}. Decoding alone on one thread took "
            f"{r['decode_only_1thread_s']:.1f} s ({r['decode_only_1thread_s'] / r['n'] * 1e3:.1f} ms/image). "
            f"Features from files equal those from memory (max abs diff {r['max_abs_feature_diff']:.1e}).",
        ]
    )


if __name__ == "__main__":
    main()
