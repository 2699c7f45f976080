"""The main job end to end, this tree's defaults against an earlier release, interleaved on one CPU.

Runs ``bench/bench_e2e.py`` (the example ``train_length_regressor.py`` on the 800 tiger/kittycat photos, in a fresh
process under /usr/bin/time -v) ``--reps`` times in this tree with its default precision and, alternately, in a
checkout of the baseline commit (``--before DIR``: e.g. ``git worktree add /tmp/before 3ff3aea``, the last release
with one 224 px centre crop, a fixed head and fp32) with ``--precision fp32``. Interleaving keeps drift in the
machine's speed out of the ratio; the figures are medians over the repetitions.

    python bench/bench_e2e_vs.py --before /tmp/before [--reps 3] [--out bench/results/e2e_vs_before.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, environment, median, quiet_tf, write_results  # noqa: E402

PHASE_FEATURES = "extract features (800 files: read+decode+resize+conv)"


def run_one(tree: Path, precision: str, name: str | None) -> dict:
    """One run of ``bench/bench_e2e.py`` in ``tree``; its results file, read back."""
    cmd = [sys.executable, "bench/bench_e2e.py", "--precision", precision]
    if name:
        cmd += ["--name", name]
    env = dict(os.environ, PYTHONPATH=str(tree), TF_CPP_MIN_LOG_LEVEL="2")
    p = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} in {tree} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    result = json.loads((tree / "bench" / "results" / f"{name or 'e2e_' + precision}.json").read_text())
    metrics = result.get("metrics", {})
    return {
        "total_s": result["total_s"],
        "features_s": result["phases"].get(PHASE_FEATURES),
        "peak_rss_mib": result.get("peak_rss_mib"),
        "rmse_ratio": metrics.get("rmse_ratio", metrics.get("ratio")),
        "auc": metrics.get("auc", metrics.get("tiger_cat_auc")),
        "precision_used": metrics.get("precision"),
        "stdout_tail": result.get("stdout_tail", "")[-600:],
    }


def median_of(runs: list[dict], key: str):
    """Median of ``key`` over the runs that report it (None where none does)."""
    values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
    return median(values) if values else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", type=Path, required=True, help="a checkout of the baseline commit")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--precision", default="auto", help="this tree's precision (the baseline runs fp32)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "e2e_vs_before.json")
    args = p.parse_args(argv)
    if not (args.before / "bench" / "bench_e2e.py").is_file():
        raise SystemExit(f"--before {args.before}: expected a checkout with bench/bench_e2e.py")
    quiet_tf()  # environment() imports TensorFlow: no C++ notices in the bench's output
    env = environment()
    now, before = [], []
    for rep in range(args.reps):
        # Alternate which goes first so that neither always follows the other.
        order = [("now", REPO), ("before", args.before)]
        for label, tree in order if rep % 2 == 0 else order[::-1]:
            if label == "now":
                run = run_one(tree, args.precision, "e2e_vs_now")
                now.append(run)
            else:
                run = run_one(tree, "fp32", None)
                before.append(run)
            print(f"rep {rep} {label}: {run['total_s']:.1f} s (features {run['features_s']:.1f} s)", flush=True)
    summary = {}
    for key in ("total_s", "features_s", "peak_rss_mib"):
        summary[key] = {"now": median_of(now, key), "before": median_of(before, key)}
        if summary[key]["now"] and summary[key]["before"]:
            summary[key]["ratio"] = summary[key]["now"] / summary[key]["before"]
    result = {"env": env, "reps": args.reps, "before_tree": str(args.before), "summary": summary}
    result["runs"] = {"now": now, "before": before}
    path = write_results(args.out, result, __file__, argv)
    t = summary["total_s"]
    f = summary["features_s"]
    print(
        f"{env['cpu']}: whole job now {t['now']:.1f} s, before {t['before']:.1f} s ({t['ratio']:.2f}x); "
        f"features {f['now']:.1f} s against {f['before']:.1f} s ({f['ratio']:.2f}x); medians of {args.reps}"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
