#!/usr/bin/env python
"""The main job: predict a tiger's or a cat's body length from its photo, on frozen VGG16 features.

The lengths are faked per class, as in the classic tutorial (MorvanZhou's 407_transfer_learning): a tiger is
max(20, N(100, 30)) cm, a cat max(10, N(40, 8)) cm, drawn with a seed. No model can beat the *oracle* that knows
each photo's class and says its class mean, so the held-out RMSE is reported beside the oracle's and as a ratio.

    python examples/train_length_regressor.py --data data          # data/tiger/*.jpg, data/kittycat/*.jpg
    python examples/train_length_regressor.py --data ../shared/data/morvan_tiger_kittycat/data

Writes the model (head checkpoint + vggtransfer.json) to --model-dir and PNG plots + metrics.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vggtransfer.cli.common import fraction, positive_int

CLASSES = ("tiger", "kittycat")
LENGTH_CM = {"tiger": (100.0, 30.0, 20.0), "kittycat": (40.0, 8.0, 10.0)}  # mean, std, floor


def fake_lengths(labels, seed: int) -> np.ndarray:
    """The tutorial's fake body lengths: tiger max(20, N(100, 30)), cat max(10, N(40, 8)), seeded."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels))
    for i, label in enumerate(labels):
        mean, std, floor = LENGTH_CM[label]
        out[i] = max(floor, rng.normal(mean, std))
    return out


def find_images(data: Path, per_class: int):
    from vggtransfer.data.images import list_images

    paths, labels = [], []
    for cls in CLASSES:
        folder = data / cls
        found = list_images(folder)[:per_class] if folder.is_dir() else []
        paths += found
        labels += [cls] * len(found)
    return paths, labels


def no_data_message(data: Path) -> str:
    return (
        f"No images found in {data}/tiger and {data}/kittycat.\n"
        "Get them with the download example (README, section 'Images'):\n"
        "    python examples/download_imagenet_urls.py --data data\n"
        "or point --data (or $VGGTRANSFER_DATA) at a folder with tiger/ and kittycat/ subfolders, e.g.\n"
        "    python examples/train_length_regressor.py --data ../shared/data/morvan_tiger_kittycat/data"
    )


def auc(labels_positive: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels_positive, scores))


def plot_all(out: Path, y, labels, history, test_paths, y_test, pred_test, test_is_tiger):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vggtransfer.data.images import load_image

    labels = np.asarray(labels)
    fig, ax = plt.subplots(figsize=(6, 4))
    for cls, colour in zip(CLASSES, ("tab:orange", "tab:blue")):
        ax.hist(y[labels == cls], bins=30, alpha=0.6, color=colour, label=cls)
    ax.set(xlabel="fake body length (cm)", ylabel="images", title="Fake lengths per class")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "length_histograms.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(history.train_loss) + 1)
    ax.plot(epochs, history.train_loss, label="train (all training photos)")
    ax.set(
        xlabel="epoch",
        ylabel="MSE (normalised targets)",
        yscale="log",
        title=f"Final fit: {len(epochs)} epochs (the folds' median early-stopping epoch)",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=100)
    plt.close(fig)

    # up to 8 photos of each class, interleaved
    tigers, cats = np.flatnonzero(test_is_tiger)[:8], np.flatnonzero(~test_is_tiger)[:8]
    pick = [i for pair in zip(tigers, cats) for i in pair] + list(tigers[len(cats) :]) + list(cats[len(tigers) :])
    test_paths, y_test, pred_test = [test_paths[i] for i in pick], y_test[pick], pred_test[pick]
    n = len(pick)
    cols = 4
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 2.8))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, path, true, pred in zip(np.ravel(axes), test_paths[:n], y_test[:n], pred_test[:n]):
        ax.imshow(load_image(path, 160))
        ax.set_title(f"true {true:.0f} / pred {pred:.0f} cm", fontsize=9)
    fig.suptitle("Held-out photos: true and predicted length")
    fig.tight_layout()
    fig.savefig(out / "heldout_predictions.png", dpi=100)
    plt.close(fig)


def predict_in_fresh_process(model_dir: Path, weights: str | None, images) -> list:
    """Restore the saved model in a new Python process (nothing shared with this one) and predict."""
    code = (
        "import json, sys; from vggtransfer import Vgg16; "
        "m = Vgg16(sys.argv[1] or None, restore_from=sys.argv[2]); "
        "print(json.dumps(m.predict(sys.argv[3:]).tolist()))"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    res = subprocess.run(
        [sys.executable, "-c", code, weights or "", str(model_dir), *map(str, images)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"prediction in a fresh process failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("VGGTRANSFER_DATA", "data")),
        help="folder with tiger/ and kittycat/ image folders (default: $VGGTRANSFER_DATA or data/)",
    )
    parser.add_argument(
        "--weights", default=None, help="vgg16.npy path (default: $VGGTRANSFER_WEIGHTS, the cache, else downloaded)"
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models/length_regressor"))
    parser.add_argument("--out", type=Path, default=Path("out/length_regressor"), help="plots and metrics.json")
    parser.add_argument(
        "--demo",
        type=Path,
        nargs="*",
        default=None,
        help="images to predict from a fresh process (default: demo/ beside --data, if present)",
    )
    parser.add_argument("--per-class", type=positive_int, default=400, help="at most this many images per class (400)")
    parser.add_argument(
        "--test-fraction", type=fraction, default=0.2, help="held-out share in (0, 1), never seen in training (0.2)"
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bf16 where the CPU runs it natively, else fp32 (default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the fake lengths, the splits and training")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.test_fraction == 0:
        parser.error("argument --test-fraction: expected a number in (0, 1): the RMSE is measured on held-out photos")

    paths, labels = find_images(args.data, args.per_class)
    counts = {c: labels.count(c) for c in CLASSES}
    if min(counts.values()) < 5:
        print(no_data_message(args.data), file=sys.stderr)
        return 2

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from vggtransfer import Vgg16
    from vggtransfer.models.transfer import split_indices

    t_start = time.perf_counter()
    y = fake_lengths(labels, args.seed)
    is_tiger = np.array([label == "tiger" for label in labels])
    train, test = split_indices(len(paths), args.test_fraction, args.seed, is_tiger)
    print(
        f"{counts['tiger']} tiger + {counts['kittycat']} cat photos from {args.data}; "
        f"{len(train)} for training (incl. validation), {len(test)} held out"
    )

    from vggtransfer.core.runtime import describe_precision

    print(describe_precision(args.precision))
    model = Vgg16(args.weights, precision=args.precision)
    print(model.features_spec.describe())
    report = model.train(
        [paths[i] for i in train], y[train], seed=args.seed, progress=None if not args.quiet else False
    )
    print(f"weights: {model.weights_path}")
    for err in report.skipped:
        print(f"skipped: {err}", file=sys.stderr)
    h = report.history
    print(
        f"{report.describe()}; features {report.seconds_features:.1f} s, selection {report.seconds_select:.1f} s, "
        f"final fit {report.seconds_refit:.1f} s"
    )
    model.save(args.model_dir, extra={"task_name": "tiger/cat body length (cm)", "seed": args.seed})

    test_paths = [paths[i] for i in test]
    pred = model.predict(test_paths, progress=not args.quiet)
    ok = np.isfinite(pred)
    y_test, tiger_test = y[test][ok], is_tiger[test][ok]
    # The oracle knows each photo's class and says that class's mean length (estimated on the training split).
    class_mean = {t: y[train][is_tiger[train] == t].mean() for t in (True, False)}
    oracle = np.array([class_mean[t] for t in tiger_test])
    rmse = float(np.sqrt(np.mean((pred[ok] - y_test) ** 2)))
    mae = float(np.mean(np.abs(pred[ok] - y_test)))
    oracle_rmse = float(np.sqrt(np.mean((oracle - y_test) ** 2)))
    separation = auc(tiger_test, pred[ok])
    print(
        f"held-out ({ok.sum()} photos): RMSE {rmse:.2f} cm, MAE {mae:.2f} cm; oracle RMSE {oracle_rmse:.2f} cm; "
        f"ratio {rmse / oracle_rmse:.3f}; tiger-vs-cat AUC of predicted length {separation:.4f}"
    )

    metrics = {
        "n_train": int(len(train)),
        "n_test": int(ok.sum()),
        "rmse": rmse,
        "mae": mae,
        "oracle_rmse": oracle_rmse,
        "ratio": rmse / oracle_rmse,
        "auc": separation,
        "selection": report.selection,
        "calibration": report.calibration,
        "seconds_features": report.seconds_features,
        "seconds_select": report.seconds_select,
        "seconds_refit": report.seconds_refit,
        "precision": model.extractor.precision,
        "skipped": [str(e) for e in report.skipped],
    }

    demo = args.demo
    if demo is None:
        demo_root = args.data.parent / "demo"
        demo = sorted(p for cls in CLASSES for p in (demo_root / cls).glob("*") if p.is_file())
    if demo:
        fresh = predict_in_fresh_process(args.model_dir, args.weights, demo)
        for path, value in zip(demo, fresh):
            print(f"fresh process: {path}: {value:.1f} cm")
        metrics["demo"] = {str(p): v for p, v in zip(demo, fresh)}

    args.out.mkdir(parents=True, exist_ok=True)
    plot_all(args.out, y, labels, h, [p for p, good in zip(test_paths, ok) if good], y_test, pred[ok], tiger_test)
    metrics["seconds_total"] = time.perf_counter() - t_start
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"model: {args.model_dir}; plots and metrics.json: {args.out} ({metrics['seconds_total']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
