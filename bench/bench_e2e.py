"""Benchmark 5: the end-to-end main job and where its time goes.

Default: runs the main job, ``examples/train_length_regressor.py`` on the 800 tiger/kittycat JPEGs, in a fresh
process under /usr/bin/time -v (wall time, peak RSS), and breaks its wall time down with the timings the job
writes to metrics.json (feature extraction, head training) plus the rest (start-up, split, save, plots, the
fresh-process prediction). ``--api`` (or when the example is missing) times the equivalent through the API instead:
Vgg16(weights).train(800 JPEGs, lengths) + save + restore + predict, phase by phase.

    python bench/bench_e2e.py [--precision auto] [--api] [--name e2e_auto]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import TIGER_CAT, WEIGHTS, environment, fmt_env, quiet_tf, save, time_v  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precision", default="auto")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--limit", type=int, default=0, help="only the first N images per class (smoke test)")
    p.add_argument("--api", action="store_true", help="time the API equivalent instead of the example script")
    p.add_argument("--name", default=None, help="results file bench/results/NAME.json (default: e2e_PRECISION)")
    args = p.parse_args(argv)
    example = Path(__file__).resolve().parents[1] / "examples" / "train_length_regressor.py"
    if example.exists() and not args.api:
        return run_example(example, args)
    quiet_tf()
    t_start = time.perf_counter()
    import numpy as np

    from vggtransfer.data.images import list_images, load_image
    from vggtransfer.models.vgg16 import Vgg16

    t_import = time.perf_counter() - t_start
    env = environment()
    tigers, cats = list_images(TIGER_CAT / "tiger"), list_images(TIGER_CAT / "kittycat")
    if args.limit:
        tigers, cats = tigers[: args.limit], cats[: args.limit]
    rng = np.random.default_rng(0)
    # The tutorial's fake "body length" targets: tigers ~ N(100, 30) clipped at 20 cm, cats ~ N(40, 8) at 10 cm.
    lengths = np.concatenate(
        [np.maximum(20, rng.normal(100, 30, len(tigers))), np.maximum(10, rng.normal(40, 8, len(cats)))]
    )
    paths = [str(q) for q in tigers + cats]
    phases = {"import vggtransfer + tensorflow": t_import}
    t = time.perf_counter()
    model = Vgg16(str(WEIGHTS), precision=args.precision)
    phases["load weights + build graph + init"] = time.perf_counter() - t
    t = time.perf_counter()
    report = model.train(paths, lengths, epochs=args.epochs, progress=False)
    train_s = time.perf_counter() - t
    phases[f"extract features ({len(paths)} files: read+decode+resize+conv)"] = report.seconds_features
    phases["train head"] = report.seconds_head
    phases["train: rest (split, bookkeeping)"] = train_s - report.seconds_features - report.seconds_head
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        model.save(Path(tmp) / "model")
        phases["save"] = time.perf_counter() - t
        model.close()
        t = time.perf_counter()
        restored = Vgg16(str(WEIGHTS), restore_from=Path(tmp) / "model", precision=args.precision)
        phases["restore (new graph + session)"] = time.perf_counter() - t
        t = time.perf_counter()
        pred = restored.predict(paths[:10])
        phases["predict 10 files"] = time.perf_counter() - t
        restored.close()
    total = time.perf_counter() - t_start
    # Decoding alone, single thread, for the share of extraction it represents (it overlaps with the conv).
    t = time.perf_counter()
    for q in paths:
        load_image(q, 224)
    decode_s = time.perf_counter() - t
    result = {
        "env": env,
        "precision": args.precision,
        "total_s": total,
        "phases": phases,
        "decode_only_1thread_s": decode_s,
        "epochs_run": report.history.stopped_epoch,
        "val_rmse": report.history.best_val_metric,
        "predictions_first3": pred[:3].tolist(),
    }
    path = save(args.name or f"e2e_{args.precision}", result)
    print(report_md(result))
    print(f"wrote {path}")


def run_example(example: Path, args):
    import json
    import os
    import subprocess

    env = environment()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            "/usr/bin/time",
            "-v",
            sys.executable,
            str(example),
            "--data",
            str(TIGER_CAT),
            "--weights",
            str(WEIGHTS),
            "--model-dir",
            f"{tmp}/model",
            "--out",
            f"{tmp}/out",
            "--precision",
            args.precision,
            "--quiet",
        ]
        if args.limit:
            cmd += ["--per-class", str(args.limit)]
        t = time.perf_counter()
        p = subprocess.run(
            cmd, capture_output=True, text=True, cwd=example.parents[1], env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        )
        wall = time.perf_counter() - t
        if p.returncode != 0:
            raise SystemExit(f"{example.name} failed (exit {p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
        metrics = json.loads((Path(tmp) / "out" / "metrics.json").read_text())
    rss = time_v(p.stderr)["peak_rss_mib"]
    feats = metrics.get("seconds_features", float("nan"))
    head = metrics.get("seconds_head", metrics.get("seconds_select", 0.0) + metrics.get("seconds_refit", 0.0))
    inner = metrics.get("seconds_total", float("nan"))
    phases = {
        "interpreter + imports (before the job's clock starts)": wall - inner,
        "extract features (800 files: read+decode+resize+conv)": feats,
        "select by CV + train head": head,
        "rest: weights/graph set-up, split, save, plots, fresh-process prediction": inner - feats - head,
    }
    result = {
        "env": env,
        "precision": args.precision,
        "total_s": wall,
        "phases": phases,
        "peak_rss_mib": rss,
        "command": " ".join(["python", "examples/train_length_regressor.py"] + cmd[4:]),
        "metrics": {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))},
        "stdout_tail": p.stdout[-1500:],
    }
    path = save(args.name or f"e2e_{args.precision}", result)
    lines = [
        f"Environment: {fmt_env(env)}. Precision {args.precision}. Job: `{result['command']}` (temp dirs).",
        "",
        "| phase | seconds | share |",
        "|---|---|---|",
    ]
    for k, v in phases.items():
        lines.append(f"| {k} | {v:.1f} | {v / wall:.0%} |")
    lines += [
        f"| **total (wall, /usr/bin/time)** | **{wall:.1f}** | |",
        "",
        f"Peak RSS of the job: {rss:.0f} MiB. Job output (tail):",
        "",
        "```",
        p.stdout.strip()[-1200:],
        "```",
    ]
    print("\n".join(lines))
    print(f"wrote {path}")


def report_md(r: dict) -> str:
    lines = [
        f"Environment: {fmt_env(r['env'])}. Precision {r['precision']}.",
        "",
        "| phase | seconds | share |",
        "|---|---|---|",
    ]
    for k, v in r["phases"].items():
        lines.append(f"| {k} | {v:.1f} | {v / r['total_s']:.0%} |")
    lines += [
        f"| **total (wall)** | **{r['total_s']:.1f}** | |",
        "",
        f"Head: {r['epochs_run']} epochs (early stopping), val RMSE {r['val_rmse']:.1f} cm. Decoding the "
        f"files alone takes {r['decode_only_1thread_s']:.1f} s on one thread; in the job it overlaps with the "
        "conv compute inside 'extract features'.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
