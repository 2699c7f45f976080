"""bf16 accuracy: pool5 relative error versus fp32 on real images, and downstream accuracy of FP32 vs bf16 features.

- hymenoptera (ants/bees, 245 train / 153 val JPEGs; the GIF placeholder is kept as the tutorial has it): pool5 at
  224 px, global average pooled, standardised, logistic regression on train, accuracy on val.
- SIGNS (6 hand-sign digits, 64x64 JPEGs): pool5 at 64 px flattened (2x2x512), logistic regression on
  train_signs + val_signs (1,080), accuracy on test_signs (120; one image = 0.83 points).

    python bench/bench_bf16_accuracy.py [--name bf16_accuracy]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import HYMENOPTERA, SIGNS, WEIGHTS, environment, fmt_env, quiet_tf, save  # noqa: E402


def logreg_predict(x_tr, y_tr, x_te):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=0.1))
    clf.fit(x_tr, y_tr)
    return clf.predict(x_te), clf.predict_proba(x_te)


def dataset(name):
    from vggtransfer.data.images import list_images

    if name == "hymenoptera":

        def split(s):
            items = [(p, c) for c in ("ants", "bees") for p in list_images(HYMENOPTERA / s / c)]
            return [p for p, _ in items], [c for _, c in items]

        return split("train"), split("val"), 224

    def split(*folders):
        paths = [p for f in folders for p in list_images(SIGNS / f)]
        return paths, [p.name.split("_")[0] for p in paths]

    return split("train_signs", "val_signs"), split("test_signs"), 64


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="hymenoptera,signs")
    p.add_argument("--name", default="bf16_accuracy", help="results file bench/results/NAME.json")
    args = p.parse_args(argv)
    quiet_tf()
    import numpy as np

    from vggtransfer.features.extractor import FeatureExtractor

    env = environment()
    out = {"env": env, "datasets": {}}
    for name in args.datasets.split(","):
        (tr_p, tr_y), (te_p, te_y), size = dataset(name)
        feats, secs = {}, {}
        for precision in ("fp32", "bf16"):
            with FeatureExtractor(WEIGHTS, pooling="flatten", image_size=size, precision=precision) as fx:
                t = time.perf_counter()
                f_tr, ok_tr, err_tr = fx.extract_paths(tr_p, progress=False)
                f_te, ok_te, err_te = fx.extract_paths(te_p, progress=False)
                secs[precision] = time.perf_counter() - t
                assert not err_te
                feats[precision] = (f_tr, ok_tr, f_te, ok_te, fx.precision)
        y_tr = np.asarray(tr_y)[feats["fp32"][1]]
        y_te = np.asarray(te_y)[feats["fp32"][3]]
        a = np.concatenate([feats["fp32"][0], feats["fp32"][2]])
        b = np.concatenate([feats["bf16"][0], feats["bf16"][2]])
        per_image = np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1)
        res = {
            "size": size,
            "n_train": len(y_tr),
            "n_test": len(y_te),
            "bf16_ran_as": feats["bf16"][4],
            "pool5_rel_err_global": float(np.linalg.norm(b - a) / np.linalg.norm(a)),
            "pool5_rel_err_per_image_median": float(np.median(per_image)),
            "pool5_rel_err_per_image_max": float(per_image.max()),
            "extract_s": secs,
        }
        preds, probas = {}, {}
        for precision in ("fp32", "bf16"):
            f_tr, _, f_te, _, _ = feats[precision]
            if name == "hymenoptera":  # global average pooling of the 7x7x512 map
                f_tr, f_te = (f.reshape(len(f), -1, 512).mean(1) for f in (f_tr, f_te))
            pred, proba = logreg_predict(f_tr, y_tr, f_te)
            res[f"accuracy_{precision}"] = float((pred == y_te).mean())
            preds[precision], probas[precision] = pred, proba
        res["accuracy_delta_points"] = 100 * (res["accuracy_bf16"] - res["accuracy_fp32"])
        res["prediction_agreement"] = float((preds["fp32"] == preds["bf16"]).mean())
        res["max_probability_diff"] = float(np.abs(probas["fp32"] - probas["bf16"]).max())
        out["datasets"][name] = res
        print(name, res, file=sys.stderr)
    path = save(args.name, out)
    print(report(out))
    print(f"wrote {path}")


def report(r: dict) -> str:
    lines = [
        f"Environment: {fmt_env(r['env'])}.",
        "",
        "| data | px | train / test | pool5 rel. error (global; per-image median, max) | accuracy FP32 | "
        "accuracy bf16 | delta (points) | same prediction | extract s FP32 / bf16 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, d in r["datasets"].items():
        lines.append(
            f"| {name} | {d['size']} | {d['n_train']} / {d['n_test']} | {d['pool5_rel_err_global']:.2%}; "
            f"{d['pool5_rel_err_per_image_median']:.2%}, {d['pool5_rel_err_per_image_max']:.2%} | "
            f"{d['accuracy_fp32']:.2%} | {d['accuracy_bf16']:.2%} | {d['accuracy_delta_points']:+.2f} | "
            f"{d['prediction_agreement']:.1%} | "
            f"{d['extract_s']['fp32']:.0f} / {d['extract_s']['bf16']:.0f} |"
        )
    lines += [
        "",
        "One test image is 100/153 = 0.65 points (hymenoptera) and 100/120 = 0.83 points (SIGNS); 'same "
        "prediction' is the share of test images on which the FP32- and bf16-trained classifiers agree.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
