"""Benchmark 4: peak RSS (/usr/bin/time -v, fresh process each) of load + build + predict one image.

Scenarios: import tensorflow only; vggtransfer on the conv-only file; vggtransfer on a full-size vgg16.npy (real
shapes incl. fc6 25088x4096, fc7, fc8; the real conv weights and zero fc weights, written with
vggtransfer.weights.npy.save_weights into a temp folder, never the repo); frozen='variable' vs 'constant'; the
Vgg16 model predicting one file; and the tutorial approach (np.load the whole full file, every layer a tf.constant).

    python bench/bench_memory.py [--reps 3] [--tmp /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, TIGER_CAT, WEIGHTS, environment, fmt_env, median, save, time_v  # noqa: E402

TIME = "/usr/bin/time"


def full_size_file(tmp: Path) -> Path:
    """A vgg16.npy with the real shapes of all 16 layers (conv from the real file, fc zeros), cached in ``tmp``."""
    import numpy as np

    from vggtransfer.weights.npy import load_weights, save_weights

    path = tmp / "vggtransfer_bench_vgg16_full.npy"
    if path.exists():
        return path
    w = dict(load_weights(WEIGHTS))
    w["fc6"] = (np.zeros((25088, 4096), np.float32), np.zeros(4096, np.float32))
    w["fc7"] = (np.zeros((4096, 4096), np.float32), np.zeros(4096, np.float32))
    w["fc8"] = (np.zeros((4096, 1000), np.float32), np.zeros(1000, np.float32))
    save_weights(w, path)
    return path


def measure(args) -> dict:
    cmd = [TIME, "-v", sys.executable, str(Path(__file__).with_name("mem_worker.py"))] + [str(a) for a in args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{args}: exit {p.returncode}\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return {**time_v(p.stderr), **out}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--tmp", default="/tmp")
    p.add_argument("--no-tutorial", action="store_true", help="skip the 8 GB tutorial scenario")
    args = p.parse_args(argv)
    if not Path(TIME).exists():
        raise SystemExit(f"{TIME} is missing: apt-get install time")
    env = environment()
    full = full_size_file(Path(args.tmp))
    image = sorted((TIGER_CAT / "tiger").glob("*.jpg"))[0]
    scenarios = {
        "import tensorflow": ["import"],
        "conv-only file, frozen=variable (default)": ["vggtransfer-variable", WEIGHTS],
        "full-size file, frozen=variable (default)": ["vggtransfer-variable", full],
        "full-size file, frozen=constant": ["vggtransfer-constant", full],
        "full-size file, Vgg16 model predict(1 JPEG)": ["model", full, image],
    }
    if not args.no_tutorial:
        scenarios["tutorial: np.load whole full file, all layers tf.constant"] = ["tutorial", full]
    runs = {k: [] for k in scenarios}
    for rep in range(args.reps):
        for name, a in scenarios.items():
            if name.startswith("tutorial") and rep >= 1:
                continue  # 8 GB and ~30 s: once is enough
            runs[name].append(measure(a))
            print(f"rep {rep + 1}: {name}: {runs[name][-1]}", file=sys.stderr)
    result = {
        "env": env,
        "full_file": str(full),
        "full_file_bytes": full.stat().st_size,
        "runs": runs,
        "summary": {
            k: {
                "peak_rss_mib": median([r["peak_rss_mib"] for r in v]),
                "first_run_s": median([r["first_run_s"] for r in v]),
                "wall_s": median([r["wall_s"] for r in v]),
                "n": len(v),
            }
            for k, v in runs.items()
        },
    }
    path = save("memory", result)
    print(report(result))
    print(f"wrote {path}")


def report(r: dict) -> str:
    lines = [
        f"Environment: {fmt_env(r['env'])}. Full-size file: {r['full_file_bytes'] / 1e6:.0f} MB "
        "(real conv weights + zero fc6-fc8 with the real shapes).",
        "",
        "| scenario | peak RSS (MiB) | first session.run (s) | process wall (s) | runs |",
        "|---|---|---|---|---|",
    ]
    for k, s in r["summary"].items():
        lines.append(f"| {k} | {s['peak_rss_mib']:.0f} | {s['first_run_s']:.2f} | {s['wall_s']:.1f} | {s['n']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
