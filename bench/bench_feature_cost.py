"""What each default feature configuration costs against one 224 px centre crop, on this CPU, from the same files.

The baseline is the previous releases' feature: one block (pool5, global average) of the 224 px centre crop. Against
it, on the same photo files and in one process: the targets' default (the whole photo, short side 224 px, six
blocks of pool3/4/5) and the classes' default (the whole photo at 112, 224 and 320 px, eighteen blocks), in the
default precision, and the crop in fp32 (what the main job ran before ``precision="auto"``). Blocks of one scale
come out of one forward pass, so a configuration's cost is its scales' pixels; the extra poolings are free. The
classes' default keeps each photo's mirror image (a second forward pass per view); the same blocks without it are
timed beside it.

Runs are interleaved (each repetition times every configuration, in alternating order) and the ratios are taken
within a repetition, then the median over repetitions. Photos: the first ``--per-set`` files of each set (ants/bees
train: mostly 4:3 photos; SIGNS: 64 px squares; tiger/cat: web photos).

    python bench/bench_feature_cost.py [--reps 3] [--per-set 96] [--name feature_cost]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import HYMENOPTERA, SIGNS, TIGER_CAT, WEIGHTS, environment, fmt_env, median, quiet_tf, save  # noqa: E402


def photos(per_set: int) -> dict:
    """The first ``per_set`` image files of each available set."""
    from vggtransfer.data.images import list_images

    sets = {"ants/bees": HYMENOPTERA / "train", "SIGNS": SIGNS / "train_signs", "tiger/cat": TIGER_CAT}
    out = {}
    for name, root in sets.items():
        if root.is_dir():
            files = list_images(root, recursive=True)
            if files:
                out[name] = [str(f) for f in files[:per_set]]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--per-set", type=int, default=96)
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--name", default="feature_cost", help="results file bench/results/NAME.json")
    args = p.parse_args(argv)
    quiet_tf()
    import dataclasses

    from vggtransfer.core.runtime import resolve_precision
    from vggtransfer.features.blocks import BlockExtractor
    from vggtransfer.features.spec import FeatureSpec
    from vggtransfer.models.defaults import default_features
    from vggtransfer.weights.npy import load_weights

    env = environment()
    precision = resolve_precision("auto")
    weights = load_weights(args.weights)
    configs = {
        "crop 224, pool5 avg, fp32": (FeatureSpec.classic("pool5", "avg", 224), "fp32"),
        f"crop 224, pool5 avg, {precision}": (FeatureSpec.classic("pool5", "avg", 224), precision),
        f"targets' default ({precision})": (default_features("regression"), precision),
        f"classes' default ({precision})": (default_features("classification"), precision),
        f"classes' default without the mirror image ({precision})": (
            dataclasses.replace(default_features("classification"), mirror=False),
            precision,
        ),
    }
    baseline = f"crop 224, pool5 avg, {precision}"
    extractors = {k: BlockExtractor(weights, spec=spec, precision=pr) for k, (spec, pr) in configs.items()}
    sets = photos(args.per_set)
    times: dict = {s: {k: [] for k in configs} for s in sets}
    for s, files in sets.items():
        for ex in extractors.values():  # warm-up: graph optimisation, oneDNN primitives for these shapes
            ex.extract_paths(files[:4], progress=False)
    for rep in range(args.reps):
        for s, files in sets.items():
            order = list(configs) if rep % 2 == 0 else list(configs)[::-1]
            for k in order:
                t = time.perf_counter()
                extractors[k].extract_paths(files, progress=False)
                times[s][k].append(time.perf_counter() - t)
        print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr, flush=True)
    for ex in extractors.values():
        ex.close()
    rows = []
    for s, files in sets.items():
        for k, (spec, pr) in configs.items():
            rows.append(
                {
                    "set": s,
                    "config": k,
                    "scales": list(spec.scales),
                    "view": spec.view,
                    "blocks": len(spec.end_points) * len(spec.poolings) * len(spec.scales) * (2 if spec.mirror else 1),
                    "precision": pr,
                    "img_s": median([len(files) / t for t in times[s][k]]),
                    "vs_crop_same_precision": median([t / t0 for t, t0 in zip(times[s][k], times[s][baseline])]),
                    "seconds_all": times[s][k],
                }
            )
    result = {"env": env, "reps": args.reps, "per_set": args.per_set, "precision_auto": precision, "rows": rows}
    path = save(args.name, result)
    print(f"Environment: {fmt_env(env)}; precision auto = {precision}; medians of {args.reps} repetitions.\n")
    print(f"| photos | configuration | blocks | img/s | time vs {baseline} |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['config']} | {r['blocks']} | {r['img_s']:.1f} | {r['vs_crop_same_precision']:.2f}x |")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
