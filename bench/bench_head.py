"""Benchmark 3: head training, 100 steps of batch 6, on cached pool5 features versus the tutorial's loop that feeds
images and recomputes the frozen VGG forward pass at every step (MorvanZhou 407_transfer_learning: fc6 256 + 1
output on the flattened pool5). Same graph, same train op: the cached run feeds the features placeholder, the
tutorial run feeds images. Also reports the cached run including the one-time extraction of its images.

    python bench/bench_head.py [--steps 100] [--recompute-steps 100]
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
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--recompute-steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions of the cached run")
    p.add_argument("--images", type=int, default=60, help="distinct training images (from the tiger/cat set)")
    args = p.parse_args(argv)
    quiet_tf()
    import numpy as np

    from vggtransfer.data.images import list_images, load_images
    from vggtransfer.models.vgg16 import Vgg16

    env = environment()
    paths = (
        list_images(TIGER_CAT / "tiger")[: args.images // 2] + list_images(TIGER_CAT / "kittycat")[: args.images // 2]
    )
    x, ok, _ = load_images(paths, 224)
    y = np.random.default_rng(0).normal(size=len(x)).astype(np.float32)
    model = Vgg16(str(WEIGHTS), pooling="flatten")  # the tutorial flattens pool5 (25088) into fc6
    head, sess, fx = model.head, model.session, model.extractor
    sess.run(head.init_op)
    t = time.perf_counter()
    feats = fx.extract_arrays(x)
    extract_s = time.perf_counter() - t
    rng = np.random.default_rng(1)

    def steps(n, cached):
        t = time.perf_counter()
        for _ in range(n):
            idx = rng.integers(0, len(x), args.batch)
            feed = {head.features: feats[idx]} if cached else {fx.images: x[idx]}
            feed[head.targets] = y[idx]
            feed[head.training] = True
            sess.run(head.train_op, feed)
        return (time.perf_counter() - t) / n

    steps(3, True), steps(1, False)  # warm-up
    cached, recompute = [], []
    per_rep = max(1, args.recompute_steps // args.reps)
    for rep in range(args.reps):
        for mode in ("c", "r") if rep % 2 == 0 else ("r", "c"):
            if mode == "c":
                cached.append(steps(args.steps, True))
            else:
                recompute.append(steps(per_rep, False))
        print(
            f"rep {rep + 1}: cached {cached[-1] * 1e3:.2f} ms/step, recompute {recompute[-1] * 1e3:.0f} ms/step",
            file=sys.stderr,
        )
    model.close()
    c, r = median(cached), median(recompute)
    result = {
        "env": env,
        "batch": args.batch,
        "steps": args.steps,
        "recompute_steps_total": per_rep * args.reps,
        "cached_s_per_step": cached,
        "recompute_s_per_step": recompute,
        "ratio": r / c,
        "ratios": [b / a for a, b in zip(cached, recompute)],
        "extract_s": extract_s,
        "extract_images": len(x),
        "ratio_incl_extraction": (r * args.steps) / (c * args.steps + extract_s),
    }
    path = save("head", result)
    print(report(result))
    print(f"wrote {path}")


def report(r: dict) -> str:
    c, rc = median(r["cached_s_per_step"]), median(r["recompute_s_per_step"])
    return "\n".join(
        [
            f"Environment: {fmt_env(r['env'])}.",
            "",
            "| loop | per step | 100 steps |",
            "|---|---|---|",
            f"| cached pool5 features (vggtransfer) | {c * 1e3:.2f} ms | {c * 100:.2f} s |",
            f"| recompute VGG forward each step (tutorial) | {rc * 1e3:.0f} ms | {rc * 100:.1f} s |",
            "",
            f"Speed-up per step: {r['ratio']:.0f}x (median of per-repetition ratios "
            f"{median(r['ratios']):.0f}x; {len(r['ratios'])} interleaved repetitions; cached runs of {r['steps']} steps, "
            f"recompute runs totalling {r['recompute_steps_total']} steps, batch {r['batch']}, 224 px, flatten pool5 -> fc6 "
            f"256 -> 1). Including the one-time extraction of the {r['extract_images']} training images "
            f"({r['extract_s']:.1f} s), 100 cached steps vs 100 recomputed: {r['ratio_incl_extraction']:.1f}x.",
        ]
    )


if __name__ == "__main__":
    main()
