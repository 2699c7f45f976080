#!/usr/bin/env python
"""Sweep of regressor head settings on the tiger/cat length task: where Vgg16's defaults come from.

pool5 features of the 800 photos are extracted once (cached in --cache), then each head setting is trained on
4 different seeded train/test splits (the same protocol as examples/train_length_regressor.py: 20 % held out,
the rest split again 80/20 for early stopping) and scored by held-out RMSE / oracle RMSE and tiger-vs-cat AUC.

    python bench/tune_regressor.py --data ../shared/data/morvan_tiger_kittycat/data \
        --weights ../shared/weights/vgg16_conv_imagenet.npy
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SETTINGS = [
    dict(pooling="flatten", l2=1e-3, lr=1e-4),
    dict(pooling="flatten", l2=0.1, lr=1e-4),
    dict(pooling="max", l2=1e-2, lr=1e-4),
    dict(pooling="avg", l2=1e-2, lr=1e-4),
    dict(pooling="avg", l2=0.1, lr=1e-4),
    dict(pooling="avg", l2=1.0, lr=1e-4),
    dict(pooling="avg", l2=3.0, lr=1e-4),
    dict(pooling="avg", l2=1.0, lr=1e-3),  # the library default
]


def pooled(maps: np.ndarray, pooling: str) -> np.ndarray:
    if pooling == "flatten":
        return maps.reshape(len(maps), -1)
    return maps.max((1, 2)) if pooling == "max" else maps.mean((1, 2))


def run(maps, y, is_tiger, setting, split):
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score

    from vggtransfer.models.heads import HeadGraph, HeadSpec
    from vggtransfer.models.transfer import split_indices

    tf1 = tf.compat.v1
    x = pooled(maps, setting["pooling"])
    train, test = split_indices(len(x), 0.2, split, is_tiger)
    fit, val = split_indices(len(train), 0.2, split, is_tiger[train])
    fit, val = train[fit], train[val]
    spec = HeadSpec(
        hidden=(256,), dropout=0.5, l2=setting["l2"], target_mean=float(y[fit].mean()), target_scale=float(y[fit].std())
    )
    yn = ((y - spec.target_mean) / spec.target_scale).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        head = HeadGraph(tf1.placeholder(tf.float32, [None, x.shape[1]]), spec, learning_rate=setting["lr"])
        sess = tf1.Session(graph=graph)
        sess.run(tf1.global_variables_initializer())
    head.fit(sess, x[fit], yn[fit], x[val], yn[val], epochs=300, batch_size=32, patience=30, seed=split, progress=False)
    pred = head.predict_features(sess, x[test])
    sess.close()
    class_mean = {t: y[train][is_tiger[train] == t].mean() for t in (True, False)}
    oracle = np.array([class_mean[t] for t in is_tiger[test]])
    rmse = np.sqrt(np.mean((pred - y[test]) ** 2))
    return rmse / np.sqrt(np.mean((oracle - y[test]) ** 2)), roc_auc_score(is_tiger[test], pred)


def main(argv=None) -> int:
    from train_length_regressor import fake_lengths, find_images

    from vggtransfer.features.extractor import FeatureExtractor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--cache", type=Path, default=Path("out/tune_regressor_pool5.npz"))
    ap.add_argument("--splits", type=int, default=4)
    args = ap.parse_args(argv)

    paths, labels = find_images(args.data, 400)
    if args.cache.is_file():
        maps = np.load(args.cache)["maps"]
    else:
        with FeatureExtractor(args.weights, pooling="flatten") as fx:
            feats, ok, errors = fx.extract_paths(paths)
        if errors:
            raise SystemExit(f"unreadable images: {errors}")
        maps = feats.reshape(-1, 7, 7, 512)
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.cache, maps=maps)
    y = fake_lengths(labels, 0)
    is_tiger = np.array([label == "tiger" for label in labels])
    print(f"| pooling | L2 | lr | RMSE/oracle (mean over {args.splits} splits) | worst | min AUC |")
    print("|---|---|---|---|---|---|")
    for setting in SETTINGS:
        t0 = time.perf_counter()
        scores = [run(maps, y, is_tiger, setting, s) for s in range(args.splits)]
        ratios, aucs = np.array(scores).T
        print(
            f"| {setting['pooling']} | {setting['l2']} | {setting['lr']} | {ratios.mean():.3f} | {ratios.max():.3f} "
            f"| {aucs.min():.4f} |  ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
