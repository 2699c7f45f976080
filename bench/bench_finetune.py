"""Fine-tuning against the auto recipe on one class-folder set: wall time and held-out accuracy, in one run.

Would fine-tuning fit as one of auto's candidates? Auto's time rule: selection costs no more than the extraction of
the same data. This runs, on the same CPU and one after the other, the two CLI jobs a user would run:

- ``vggtransfer train --data TRAIN --model M`` (the defaults: the auto recipe) and
- ``vggtransfer train --data TRAIN --model M --recipe finetune --trainable-from LAYER`` (the fine-tuning recipe's
  defaults: augmentation, early stopping on a seeded 20 % of TRAIN, fp32),

each followed by ``vggtransfer evaluate --model M VAL --json``, and writes their wall times, what auto's own report
says its extraction and selection took, and both held-out figures. One fit of fine-tuning is what a single
candidate would cost per fold: cross-validating it would cost ``--folds`` times that.

    python bench/bench_finetune.py --train ../shared/data/hymenoptera/hymenoptera_data/train \\
        --val ../shared/data/hymenoptera/hymenoptera_data/val [--trainable-from conv5_1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, WEIGHTS, environment, time_v, write_results  # noqa: E402


def run(args: list, what: str) -> tuple:
    """Run ``vggtransfer ARGS`` under /usr/bin/time -v: (wall seconds, stdout, peak RSS MiB)."""
    cmd = ["/usr/bin/time", "-v", str(Path(sys.executable).with_name("vggtransfer")), *args]  # the console script
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{what} failed (exit {p.returncode}): {' '.join(args)}\n{p.stderr[-3000:]}")
    return wall, p.stdout, time_v(p.stderr)["peak_rss_mib"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=Path, required=True, help="a folder of class folders")
    p.add_argument("--val", type=Path, required=True, help="held-out class folders (the same classes)")
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--trainable-from", default="conv5_1")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "finetune.json")
    args = p.parse_args(argv)
    for flag, path in (("--train", args.train), ("--val", args.val)):
        if not path.is_dir():
            raise SystemExit(f"{flag} {path}: expected a folder of class folders")
    env = environment()
    result: dict = {"env": env, "train": str(args.train), "val": str(args.val)}
    with tempfile.TemporaryDirectory() as tmp:
        jobs = {"auto": [], "finetune": ["--recipe", "finetune", "--trainable-from", args.trainable_from]}
        for name, extra in jobs.items():
            model = f"{tmp}/{name}"
            common = ["--weights", str(args.weights), "--quiet"]
            wall, out, rss = run(["train", "--data", str(args.train), "--model", model, *extra, *common], name)
            ev_wall, ev_out, _ = run(["evaluate", "--model", model, str(args.val), "--json", *common], f"{name} eval")
            metrics = json.loads(ev_out)
            saved = json.loads((Path(model) / "vggtransfer.json").read_text())
            result[name] = {
                "command": " ".join(["vggtransfer", "train", "--data", "TRAIN", "--model", "M", *extra]),
                "train_wall_s": wall,
                "train_peak_rss_mib": rss,
                "evaluate_wall_s": ev_wall,
                "val_accuracy": metrics["accuracy"],
                "val_mean_class_recall": metrics.get("mean_class_recall"),
                "val_ece": metrics.get("ece"),
                "train_stdout_tail": out[-800:],
                "saved_selection": {k: v for k, v in saved.get("selection", {}).items() if not isinstance(v, list)},
            }
            print(f"{name}: train {wall:.1f} s, val accuracy {metrics['accuracy']:.2%}", flush=True)
    result["finetune_over_auto_train_time"] = result["finetune"]["train_wall_s"] / result["auto"]["train_wall_s"]
    path = write_results(args.out, result, __file__, argv)
    print(f"fine-tuning's one fit took {result['finetune_over_auto_train_time']:.1f}x auto's whole training job")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
