"""Benchmark 5: the end-to-end main job and where its time goes.

Runs ``examples/train_length_regressor.py`` when the repository has it; otherwise (and always, for the breakdown)
the equivalent through the API: Vgg16(weights).train(800 tiger/kittycat JPEGs, lengths) + save + restore + predict,
timing construction, extraction (of which decoding), head training, save, restore, predict.

    python bench/bench_e2e.py [--precision fp32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import TIGER_CAT, WEIGHTS, environment, fmt_env, quiet_tf, save  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--limit", type=int, default=0, help="only the first N images per class (smoke test)")
    args = p.parse_args(argv)
    quiet_tf()
    t_start = time.perf_counter()
    import numpy as np

    from vggtransfer.images import list_images, load_image
    from vggtransfer.model import Vgg16

    t_import = time.perf_counter() - t_start
    env = environment()
    tigers, cats = list_images(TIGER_CAT / "tiger"), list_images(TIGER_CAT / "kittycat")
    if args.limit:
        tigers, cats = tigers[:args.limit], cats[:args.limit]
    rng = np.random.default_rng(0)
    # The tutorial's fake "body length" targets: tigers ~ N(100, 30) clipped at 20 cm, cats ~ N(40, 8) at 10 cm.
    lengths = np.concatenate([np.maximum(20, rng.normal(100, 30, len(tigers))),
                              np.maximum(10, rng.normal(40, 8, len(cats)))])
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
    result = {"env": env, "precision": args.precision, "total_s": total, "phases": phases,
              "decode_only_1thread_s": decode_s, "epochs_run": report.history.stopped_epoch + 1,
              "val_rmse": report.history.val_metric[report.history.best_epoch],
              "predictions_first3": pred[:3].tolist()}
    path = save(f"e2e_{args.precision}", result)
    print(report_md(result))
    print(f"wrote {path}")


def report_md(r: dict) -> str:
    lines = [f"Environment: {fmt_env(r['env'])}. Precision {r['precision']}.", "",
             "| phase | seconds | share |", "|---|---|---|"]
    for k, v in r["phases"].items():
        lines.append(f"| {k} | {v:.1f} | {v / r['total_s']:.0%} |")
    lines += [f"| **total (wall)** | **{r['total_s']:.1f}** | |", "",
              f"Head: {r['epochs_run']} epochs (early stopping), val RMSE {r['val_rmse']:.1f} cm. Decoding the "
              f"files alone takes {r['decode_only_1thread_s']:.1f} s on one thread; in the job it overlaps with the "
              "conv compute inside 'extract features'."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
