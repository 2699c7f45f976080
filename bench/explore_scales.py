"""Exploration (not a test, not a default's proof): which whole-image scales and flips lift frozen VGG16 block features
on SIGNS and ants/bees, judged by 5-fold cross-validation on the training data with the library's own selection
(``models.select.select``, logistic regression only); the held-out accuracy is printed beside, never used to choose.

It runs on a GPU machine with PyTorch and no TensorFlow: the conv stack is a PyTorch mirror of ``nets.vgg`` (fp32,
TF32 off) reading the same weights; the views come from the library's one preprocessing path
(``data.images.prepare``). Two steps:

    python bench/explore_scales.py bundle --out .gpu                  # here: weights (fp16) + SIGNS + ants/bees
    python3 bench/explore_scales.py run --bundle .gpu --signs 64,96,128,160,224,320 \
        --hym 224,256,320,384,448,512 --flips 0,1 --triple 256,384,512  # there (first run, 2026-11-25)
    python3 bench/explore_scales.py run --bundle .gpu --signs 112,224,320 --hym 112,160,224,320 \
        --flips 0 --triple 112,224,320                                 # there (second run)

Results (one JSON line per configuration): bench/results/explore_scales.jsonl, written on 2026-11-25 by this script's
scratch draft (the same computation and commands; an H100, 14 worker processes); this script reproduced its
SIGNS 112 px line exactly (`run --signs 112 --hym '' --results check.jsonl`). What it informed:
``models.defaults.FEATURES_CLASSES`` (112+224 px for classes, then 112+224+320), read from the ``cv`` column.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bundle(out: Path) -> None:
    """Weights as fp16 npz, SIGNS as is, ants/bees re-encoded (JPEG q90) so that all fits a device call."""
    import shutil

    from PIL import Image

    from bench.common import HYMENOPTERA, SHARED, WEIGHTS
    from vggtransfer.weights.npy import load_weights

    out.mkdir(parents=True, exist_ok=True)
    w = load_weights(WEIGHTS)
    np.savez(
        out / "w16.npz",
        **{
            f"{k}_{i}": np.asarray(v[j], dt)
            for k, v in w.items()
            for i, j, dt in (("W", 0, np.float16), ("b", 1, np.float32))
        },
    )
    shutil.copytree(SHARED / "data" / "signs", out / "signs", dirs_exist_ok=True)
    for f in HYMENOPTERA.rglob("*.jpg"):
        t = out / "hym" / f.relative_to(HYMENOPTERA)
        t.parent.mkdir(parents=True, exist_ok=True)
        Image.open(f).convert("RGB").save(t, quality=90)


class Mirror:
    """The conv stack in PyTorch (``nets.cfg``'s blocks: 3x3 SAME convs + ReLU, then a 2x2 max pool; the Caffe BGR mean),
    then global avg and max of pool3, pool4 and pool5, in the library's block order."""

    def __init__(self, w16: Path):
        import torch

        from vggtransfer.nets.cfg import VGG_MEAN_BGR, conv_blocks

        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        w = np.load(w16)
        self.torch = torch
        self.blocks = [[name for name, _, _ in block] for block in conv_blocks("vgg16")]
        self.p = {
            k: (
                torch.tensor(w[k + "_W"].astype(np.float32)).permute(3, 2, 0, 1).contiguous().cuda(),
                torch.tensor(w[k + "_b"]).cuda(),
            )
            for block in self.blocks
            for k in block
        }
        self.mean = torch.tensor(VGG_MEAN_BGR).view(1, 3, 1, 1).cuda()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch, F = self.torch, self.torch.nn.functional
        with torch.no_grad():
            t = torch.from_numpy(x).cuda().permute(0, 3, 1, 2)[:, [2, 1, 0]] * 255.0 - self.mean
            out = []
            for i, block in enumerate(self.blocks, start=1):
                for layer in block:
                    t = torch.relu(F.conv2d(t, self.p[layer][0], self.p[layer][1], padding=1))
                t = F.max_pool2d(t, 2, 2)
                if i >= 3:  # pool3, pool4, pool5
                    out += [t.mean((2, 3)), t.amax((2, 3))]
            return torch.cat(out, 1).cpu().numpy()


def view(item, q):
    from vggtransfer.data.images import load_image, prepare_array

    return prepare_array(item, q, "whole") if isinstance(item, np.ndarray) else load_image(item, q, mode="whole")


def evaluate(ftr, y, fte, yte, scales):
    from vggtransfer.features.spec import FeatureSpec, normalise_blocks
    from vggtransfer.models import select as S

    blocks = FeatureSpec(scales=tuple(scales)).blocks("vgg16")
    z, zt = normalise_blocks(ftr, blocks), normalise_blocks(fte, blocks)
    sel = S.select(z, y, blocks, "classification", models=("logreg",), k=5, seed=0, n_classes=int(y.max()) + 1)
    cols = S.columns(blocks, S.candidate_groups(blocks)[sel.best.group])
    clf = S.fit_logreg(z[:, cols], y, sel.best.reg, None, 0)
    s = sel.summary()
    return dict(
        group=sel.best.group,
        C=sel.best.reg,
        cv=s["cv_mean"],
        cv_std=s["cv_std"],
        test=float(np.mean(clf.predict(zt[:, cols]) == yte)),
    )


def datasets(root: Path, signs_scales, hym_scales):
    import h5py

    sj = root / "signs" / "64x64_SIGNS"
    tr = sorted((sj / "train_signs").glob("*.jpg")) + sorted((sj / "val_signs").glob("*.jpg"))
    with h5py.File(root / "signs" / "test_signs.h5") as fh:
        tx, ty = fh["test_set_x"][()], fh["test_set_y"][()]
    yield "signs", [str(p) for p in tr], np.array([int(p.name[0]) for p in tr]), list(tx), np.asarray(ty), signs_scales

    def items(split):
        it = [
            (str(f), c)
            for c, cls in enumerate(("ants", "bees"))
            for f in sorted((root / "hym" / split / cls).iterdir())
        ]
        return [p for p, _ in it], np.array([c for _, c in it])

    (a, ya), (b, yb) = items("train"), items("val")
    yield "hym", a, ya, b, yb, hym_scales


def run(args) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = Path(os.environ.get("OUT", "bench/results")) / args.results
    net = Mirror(args.bundle / "w16.npz")
    ints = lambda s: tuple(int(v) for v in s.split(",") if v)  # noqa: E731
    flips, triple = [bool(int(f)) for f in args.flips.split(",")], ints(args.triple)
    with ProcessPoolExecutor(args.workers) as pool:
        for name, tr, y, te, yte, scales in datasets(args.bundle, ints(args.signs), ints(args.hym)):
            feats = {}
            for q in scales:
                t0 = time.time()
                parts = []
                for items in (tr, te):
                    both = [
                        net(np.stack([v, v[:, ::-1].copy()]))
                        for v in pool.map(view, items, [q] * len(items), chunksize=8)
                    ]
                    parts.append((np.array([b[0] for b in both]), np.array([(b[0] + b[1]) / 2 for b in both])))
                feats[q] = parts
                print(name, q, f"{time.time() - t0:.1f}s", flush=True)
            configs = [
                (qs, f)
                for qs in [(q,) for q in scales] + [(a, b) for i, a in enumerate(scales) for b in scales[i + 1 :]]
                for f in flips
            ]
            if triple and all(q in scales for q in triple):
                configs += [(triple, f) for f in flips]
            pick = lambda part, qs, f: np.concatenate([feats[q][part][int(f)] for q in qs], 1)  # noqa: E731
            jobs = [(qs, f, pool.submit(evaluate, pick(0, qs, f), y, pick(1, qs, f), yte, qs)) for qs, f in configs]
            for qs, f, job in jobs:
                r = {**job.result(), "data": name, "scales": list(qs), "flip": f}
                print(json.dumps(r), flush=True)
                with open(out, "a") as fh:
                    fh.write(json.dumps(r) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundle")
    b.add_argument("--out", type=Path, default=Path(".gpu"))
    r = sub.add_parser("run")
    r.add_argument("--bundle", type=Path, default=Path(".gpu"))
    r.add_argument("--signs", default="112,224,320")
    r.add_argument("--hym", default="112,160,224,320")
    r.add_argument("--flips", default="0")
    r.add_argument("--triple", default="")
    r.add_argument("--workers", type=int, default=14)
    r.add_argument("--results", default="explore_scales.jsonl", help="file name under $OUT (or bench/results)")
    args = p.parse_args(argv)
    bundle(args.out) if args.cmd == "bundle" else run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
