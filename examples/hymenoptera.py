"""Ants vs bees (../shared/data/hymenoptera): the three recipes side by side, each with its validation accuracy.

1. feature store + scikit-learn: VGG16 pool5 features (global average) of train/ and val/ written to HDF5 stores,
   LogisticRegression with a grid search over C and standardisation (5-fold CV on train), scored on val/.
2. softmax head on the same stored features: Dense(256, relu), dropout, softmax(2); early stopping on a seeded 20 %
   of train/, scored on val/.
3. fine-tuning from conv5_1: conv5_x trainable (Adam 1e-5) + the head (1e-3), --views augmented views per training
   image (random resized crop, flip, colour jitter), early stopping on 20 % of train/, scored on val/.

    python examples/hymenoptera.py --weights ../shared/weights/vgg16_conv_imagenet.npy

train/ants/imageNotFound.gif is a placeholder GIF: it decodes, so it stays in train/ (it is reported as a bad item
only if it fails to load). Figures go to --out/results.json, the confusion matrix of recipe 1 to --out/*.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from vggtransfer.data import datasets
from vggtransfer.data.store import build_store, open_store
from vggtransfer.features.extractor import FeatureExtractor
from vggtransfer.models.classifier import VggClassifier
from vggtransfer.models.finetune import FineTunedClassifier
from vggtransfer.models.linear import LinearModel, format_confusion

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "hymenoptera")
    p.add_argument("--weights", default=None)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--out", type=Path, default=Path("/tmp/vggtransfer-examples/hymenoptera"))
    p.add_argument("--recipes", default="linear,head,finetune")
    p.add_argument("--views", type=int, default=4, help="augmented views per training image (fine-tuning)")
    p.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs (early stopping may end sooner)")
    p.add_argument("--seed", type=int, default=0, help="fine-tuning seed (augmentation, split, head init)")
    args = p.parse_args(argv)
    if not args.data.exists() and Path("/work/shared/data/hymenoptera").exists():
        args.data = Path("/work/shared/data/hymenoptera")
    root = args.data / "hymenoptera_data"
    train, val = datasets.from_folder(root / "train"), datasets.from_folder(root / "val")
    print(
        f"train {len(train)} {dict(zip(train.classes, train.class_counts().tolist()))}, "
        f"val {len(val)}; bad items: {[str(b) for b in train.bad + val.bad]}"
    )
    recipes = args.recipes.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    if "linear" in recipes or "head" in recipes:
        t0 = time.perf_counter()
        fx = FeatureExtractor(
            args.weights or _default_weights(), end_point="pool5", pooling="avg", image_size=args.size
        )
        tr_s = open_store(build_store(args.out / f"train_avg_{args.size}.h5", train, fx), fx.config)
        va_s = open_store(build_store(args.out / f"val_avg_{args.size}.h5", val, fx), fx.config)
        fx.close()
        t_feat = time.perf_counter() - t0
        print(f"feature stores: {len(tr_s)} + {len(va_s)} rows in {t_feat:.0f} s")
    if "linear" in recipes:
        t0 = time.perf_counter()
        lm = LinearModel.fit(tr_s, weights_file=str(args.weights or ""))
        rep = lm.report(va_s, png=args.out / "linear_confusion.png", title="hymenoptera val: logistic regression")
        lm.save(args.out / "linear_model")
        print(
            f"[1] store + LogisticRegression {lm.cv_results['best_params']} "
            f"(CV {100 * lm.cv_results['best_cv_accuracy']:.2f} %): val accuracy {100 * rep['accuracy']:.2f} %"
        )
        print(rep["report"])
        print(format_confusion(rep["confusion"], lm.classes))
        results["linear"] = {
            "val_accuracy": rep["accuracy"],
            **lm.cv_results,
            "seconds": round(time.perf_counter() - t0 + t_feat, 1),
        }
    if "head" in recipes:
        t0 = time.perf_counter()
        accs = []
        for seed in (0, 1, 2):
            clf = VggClassifier(
                args.weights,
                classes=train.classes,
                image_size=args.size,
                pooling="avg",
                hidden=(256,),
                dropout=0.5,
                l2=1e-3,
            )
            clf.train_store(tr_s, val_fraction=0.2, seed=seed, epochs=300, patience=30, progress=False)
            accs.append(float(np.mean(clf.head.predict_features(clf.session, va_s.features).argmax(1) == va_s.labels)))
            if seed == 0:
                clf.save(args.out / "head_model")
            clf.close()
        print(
            f"[2] softmax head on stored features: val accuracy {100 * np.mean(accs):.2f} % "
            f"(seeds 0,1,2: {', '.join(f'{100 * a:.2f}' for a in accs)})"
        )
        results["head"] = {
            "val_accuracy": float(np.mean(accs)),
            "runs": accs,
            "seconds": round(time.perf_counter() - t0, 1),
        }
    if "finetune" in recipes:
        t0 = time.perf_counter()
        ft = FineTunedClassifier(
            args.weights,
            classes=train.classes,
            trainable_from="conv5_1",
            image_size=args.size,
            pooling="avg",
            hidden=(256,),
            dropout=0.5,
            learning_rate=1e-3,
            backbone_learning_rate=1e-5,
        )
        rep = ft.train_dataset(
            train, val_fraction=0.2, views=args.views, epochs=args.epochs, patience=3, seed=args.seed
        )
        ft.save(args.out / "finetuned_model")
        ev = ft.evaluate_dataset(val)
        print(
            f"[3] fine-tuned from conv5_1 ({args.views} views, best epoch {rep.history.best_epoch} of "
            f"{rep.history.stopped_epoch}, held-out accuracy per epoch "
            f"{[round(a, 3) for a in rep.history.val_metric]}): val accuracy {100 * ev['accuracy']:.2f} %"
        )
        results["finetune"] = {
            "val_accuracy": ev["accuracy"],
            "views": args.views,
            "history_val_accuracy": rep.history.val_metric,
            "seconds_prefix": round(rep.seconds_features, 1),
            "seconds_train": round(rep.seconds_head, 1),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        ft.close()
    results_path.write_text(json.dumps(results, indent=2))
    best = max(results, key=lambda k: results[k]["val_accuracy"])
    print(
        "summary: " + ", ".join(f"{k} {100 * v['val_accuracy']:.2f} %" for k, v in results.items()) + f"; best: {best}"
    )
    return 0


def _default_weights():
    from vggtransfer.weights.sources import resolve_weights

    return resolve_weights(None, arch="vgg16")


if __name__ == "__main__":
    raise SystemExit(main())
