#!/usr/bin/env python
"""Exploration (not a test, not a default's proof): does a 2x2 spatial grid of pool4/pool5 (max or average over each
quarter of the map, as in spatial pyramid pooling: Lazebnik et al. 2006, He et al. 2014) lift frozen VGG16 features
beside the global pools the defaults use? Judged by 5-fold cross-validation on the training data (the library's own
``models.select.select``, least squares and logistic regression, seeds 0, 1, 2); the held-out accuracy of logistic
regression at the CV's C is printed beside and chooses nothing.

Ants/bees at 320 px (train: its 244 JPEGs; ``ants/imageNotFound.gif``, a download's placeholder, left out) and SIGNS
at 112+224 px (each set's scales of the defaults' CV choice), the whole image, precision auto; the conv stack is the
library's (``nets.vgg.vgg_conv``) and every view comes from its one preprocessing path. Copies are not grouped here.

    python bench/explore_grid.py [--cache DIR] [--out bench/results/explore_grid.json]

What it informed: nothing adopted (BENCHMARKS.md, "Not adopted: a spatial grid of pool4/pool5").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import HYMENOPTERA, RESULTS, SHARED, SIGNS, WEIGHTS, write_results  # noqa: E402

END_POINTS = ("pool3", "pool4", "pool5")
GRID_END_POINTS = ("pool4", "pool5")
GROUPS = {
    "pool5 avg+max": ["pool5.avg", "pool5.max"],
    "pool4+5 avg+max": ["pool4.avg", "pool4.max", "pool5.avg", "pool5.max"],
    "pool3+4+5 avg+max": ["pool3.avg", "pool3.max", "pool4.avg", "pool4.max", "pool5.avg", "pool5.max"],
    "pool5 avg+max + pool5 grid max": ["pool5.avg", "pool5.max", "pool5.gmax"],
    "pool5 avg+max + pool5 grid avg": ["pool5.avg", "pool5.max", "pool5.gavg"],
    "pool4+5 avg+max + pool5 grid max": ["pool4.avg", "pool4.max", "pool5.avg", "pool5.max", "pool5.gmax"],
    "pool3+4+5 avg+max + pool5 grid max": [
        "pool3.avg",
        "pool3.max",
        "pool4.avg",
        "pool4.max",
        "pool5.avg",
        "pool5.max",
        "pool5.gmax",
    ],
    "pool4+5 avg+max + grid max": ["pool4.avg", "pool4.max", "pool4.gmax", "pool5.avg", "pool5.max", "pool5.gmax"],
}


def _graph():
    """A session computing, per image, the global avg/max of pool3-5 and the 2x2 grid max/avg of pool4/pool5."""
    from vggtransfer.core.runtime import new_session, resolve_precision
    from vggtransfer.core.tf import tf
    from vggtransfer.nets.vgg import initialize, vgg_conv
    from vggtransfer.weights.npy import load_conv_weights

    def grid(x, reduce):
        h, w = tf.shape(x)[1], tf.shape(x)[2]
        hh, hw = (h + 1) // 2, (w + 1) // 2  # quarters overlap by a row/column where the side is odd
        parts = [x[:, :hh, :hw], x[:, :hh, w - hw :], x[:, h - hh :, :hw], x[:, h - hh :, w - hw :]]
        return tf.concat([reduce(p, axis=[1, 2]) for p in parts], axis=1)

    arch, weights, _ = load_conv_weights(str(WEIGHTS), "vgg16", "pool5")
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
        _, ep = vgg_conv(images, weights, arch=arch, final_endpoint="pool5")
        outs = {}
        for e in END_POINTS:
            outs[f"{e}.avg"] = tf.reduce_mean(ep[e], axis=[1, 2])
            outs[f"{e}.max"] = tf.reduce_max(ep[e], axis=[1, 2])
        for e in GRID_END_POINTS:
            outs[f"{e}.gmax"] = grid(ep[e], tf.reduce_max)
            outs[f"{e}.gavg"] = grid(ep[e], tf.reduce_mean)
        session = new_session(graph, resolve_precision("auto"))
        initialize(session)
    return session, images, outs


def _run(session, images, outs, views) -> dict:
    rows: dict = {k: [] for k in outs}
    for v in views:  # one image per run: views differ in shape
        r = session.run(outs, {images: v[None]})
        for k in outs:
            rows[k].append(r[k][0])
    return {k: np.stack(v) for k, v in rows.items()}


def _views(name: str, scale: int):
    """(train views, train labels, held-out views, held-out labels) of ``name`` at ``scale``."""
    import h5py

    from vggtransfer.data.images import load_image, prepare_array

    if name == "ants_bees":
        out = []
        for split in ("train", "val"):
            paths = sorted(p for p in (HYMENOPTERA / split).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            out += [
                [load_image(p, scale, mode="whole") for p in paths],
                np.array([p.parent.name == "bees" for p in paths], int),
            ]
        return out
    paths = sorted([*(SIGNS / "train_signs").glob("*.jpg"), *(SIGNS / "val_signs").glob("*.jpg")])
    with h5py.File(SHARED / "data" / "signs" / "test_signs.h5") as fh:
        x, y = fh["test_set_x"][()], fh["test_set_y"][()]
    return (
        [load_image(p, scale, mode="whole") for p in paths],
        np.array([int(p.name[0]) for p in paths]),
        [prepare_array(a, scale, "whole") for a in x],
        np.asarray(y, int),
    )


def features(name: str, scales, cache: Path | None):
    """``(train blocks, y, held-out blocks, y_test, blocks [(name, a, b)], seconds)``, blocks named ``pool5.gmax@320``."""
    path = None if cache is None else cache / f"grid_{name}_{'_'.join(map(str, scales))}.npz"
    if path is not None and path.exists():
        z = np.load(path)
        blocks = [(str(n), int(a), int(b)) for n, a, b in z["blocks"]]
        return z["train"], z["y"], z["test"], z["y_test"], blocks, float(z["seconds"])
    session, images, outs = _graph()
    t0 = time.perf_counter()
    train, test, blocks, start = [], [], [], 0
    for q in scales:
        tr_views, y, te_views, y_test = _views(name, q)
        tr, te = _run(session, images, outs, tr_views), _run(session, images, outs, te_views)
        for k in outs:
            blocks.append((f"{k}@{q}", start, start + tr[k].shape[1]))
            start += tr[k].shape[1]
            train.append(tr[k])
            test.append(te[k])
    seconds = time.perf_counter() - t0
    session.close()
    train, test = np.concatenate(train, 1), np.concatenate(test, 1)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            train=train,
            y=y,
            test=test,
            y_test=y_test,
            blocks=np.array(blocks, object).astype(str),
            seconds=seconds,
        )
    return train, y, test, y_test, blocks, seconds


def evaluate(train, y, test, y_test, blocks, seeds) -> list:
    """One row per group: CV of the best candidate (mean of the seeds), logistic regression's CV and held-out figure."""
    from vggtransfer.features.spec import normalise_blocks
    from vggtransfer.models import select, solvers

    ztr, zte = normalise_blocks(train, blocks), normalise_blocks(test, blocks)
    rows = []
    for label, prefixes in GROUPS.items():
        names = [n for n, _, _ in blocks if n.split("@")[0] in prefixes]
        cols = select.columns(blocks, names)
        sub, start = [], 0
        for n in names:
            a, b = next((a, b) for m, a, b in blocks if m == n)
            sub.append((n, start, start + b - a))
            start += b - a
        cvs, lr = [], None
        for seed in seeds:
            sel = select.select(
                ztr[:, cols], y, sub, "classification", models=("ridge", "logreg"), k=5, seed=seed,
                n_classes=int(y.max()) + 1, groups={label: names}, average=False,
            )  # fmt: skip
            cvs.append(sel.best.mean)
            if seed == seeds[0]:
                lr = max((c for c in sel.table if c.model == "logreg"), key=lambda c: c.mean)
        held_out = float(np.mean(solvers.fit_logreg(ztr[:, cols], y, lr.reg).predict(zte[:, cols]) == y_test))
        rows.append(
            {"group": label, "dim": int(len(cols)), "cv_best_mean_of_seeds": float(np.mean(cvs)), "cv_per_seed": cvs,
             "logreg_C": lr.reg, "logreg_cv": lr.mean, "held_out_logreg": held_out}
        )  # fmt: skip
        print(
            f"{label:40s} dim {len(cols):6d}  CV {100 * np.mean(cvs):.2f} %  held-out (logreg) {100 * held_out:.2f} %"
        )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=None, help="keep the extracted blocks here and reuse them")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", type=Path, default=RESULTS / "explore_grid.json")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    result = {}
    for name, scales in (("ants_bees", (320,)), ("signs", (112, 224))):
        train, y, test, y_test, blocks, seconds = features(name, scales, args.cache)
        print(f"{name} at {'+'.join(map(str, scales))} px: {len(y)} train, {len(y_test)} held out ({seconds:.0f} s)")
        result[name] = {
            "scales": list(scales),
            "seconds_extract": seconds,
            "groups": evaluate(train, y, test, y_test, blocks, seeds),
        }
    write_results(args.out, result, __file__, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
