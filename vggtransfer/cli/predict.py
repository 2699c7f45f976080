"""``vggtransfer predict``: image files through a saved model (any kind); bad files are reported per item."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from .common import UsageError, add_runtime_args, positive_int

NON_FINITE = "the model produced a non-finite output (NaN or inf); the model file may be damaged or badly trained"


def add_parser(sub, parents):
    """Register ``predict``."""
    p = sub.add_parser(
        "predict", parents=parents, help="predict image files with a saved model (any kind)",
        description="Predict each IMAGE with a saved model. Regressor: 'path<TAB>value'. Classifier (head, "
                    "linear, fine-tuned): 'path<TAB>class<TAB>probability', the --top-k best classes per image. A "
                    "file that cannot be read prints 'path<TAB>error: ...' on stderr; the others are still "
                    "predicted, and the exit code is 1.",
        epilog="example: vggtransfer predict --model models/clf photo1.jpg photo2.png --top-k 2")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", required=True, type=Path, help="a model directory saved by `vggtransfer train`")
    p.add_argument("--top-k", type=positive_int, default=None, help="classes to show per image (classifiers; default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON list of {path, prediction|top_k, error}")
    p.add_argument("--weights", default=None, help="the VGG weights the model was trained with")
    add_runtime_args(p)
    p.set_defaults(func=run_predict, interrupted="interrupted; rerun the same command")
    return p


def predict_rows(model, images, top_k: int | None) -> list:
    """One dict per image, in order: ``{path, prediction}`` (regressor) or ``{path, top_k}`` (classifier), with
    ``error`` None or the reason. Non-finite model outputs are errors, so every row is strict JSON."""
    import warnings

    from ..images import ImageError

    rows = []
    if hasattr(model, "predict_top_k"):
        for path, res in zip(images, model.predict_top_k(images, top_k or 1)):
            if isinstance(res, ImageError):
                rows.append({"path": path, "top_k": None, "error": res.reason})
            elif not all(math.isfinite(p) for _, p in res):
                rows.append({"path": path, "top_k": None, "error": NON_FINITE})
            else:
                rows.append({"path": path, "top_k": [{"class": c, "probability": p} for c, p in res], "error": None})
        return rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        values = model.predict(images, errors="report")
    errors = {e.path: e.reason for e in model.last_errors}
    for path, v in zip(images, values):
        if str(path) in errors:
            rows.append({"path": path, "prediction": None, "error": errors[str(path)]})
        elif not math.isfinite(v):
            rows.append({"path": path, "prediction": None, "error": NON_FINITE})
        else:
            rows.append({"path": path, "prediction": float(v), "error": None})
    return rows


def run_predict(args) -> int:
    """Predict and print; exit 1 when some image could not be predicted."""
    from ..modeldir import read_kind

    cfg = read_kind(args.model)
    if (cfg["kind"] == "regressor" or cfg.get("task") == "regression") and args.top_k is not None:
        raise UsageError(f"--top-k: {args.model} is a regressor (one value per image); --top-k is for classifiers")
    from ..classifier import load_model

    model = load_model(args.model, args.weights, precision=args.precision, threads=args.threads)
    rows = predict_rows(model, args.images, args.top_k)
    if args.json:
        print(json.dumps(rows, indent=1, allow_nan=False))
    else:
        for r in rows:
            if r["error"]:
                print(f"{r['path']}\terror: {r['error']}", file=sys.stderr)
            elif "top_k" in r:
                for t in r["top_k"]:
                    print(f"{r['path']}\t{t['class']}\t{t['probability']:.4f}")
            else:
                print(f"{r['path']}\t{r['prediction']:.6g}")
    return 1 if any(r["error"] for r in rows) else 0
