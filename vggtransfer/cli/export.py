"""``vggtransfer export``: a saved model (any kind) as a TensorFlow SavedModel that serves image bytes."""

from __future__ import annotations

from pathlib import Path

from vggtransfer.cli.common import positive_int


def add_parser(sub, parents):
    """Register ``export``."""
    p = sub.add_parser(
        "export",
        parents=parents,
        help="export a saved model as a TensorFlow SavedModel for serving",
        description="Write MODEL as a TensorFlow SavedModel that needs only TensorFlow: signature "
        "'serving_default' takes encoded image files (string [n]: JPEG, PNG, GIF, BMP) and decodes, "
        "crops/resizes and preprocesses them in the graph exactly as `vggtransfer predict` does; "
        "'serving_images' takes float RGB images in [0, 1] ([n, h, w, 3]). Outputs: 'valid' per item, "
        "and 'value' (regressors) or 'probabilities', 'class_index', 'class_name' (classifiers). Only a "
        "previous export is ever replaced at --out.",
        epilog="example: vggtransfer export --model models/mine --out exported/mine/1",
    )
    p.add_argument("--model", required=True, type=Path, help="a model directory saved by `vggtransfer train`")
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="the SavedModel folder to write (e.g. exported/mine/1 for TensorFlow Serving's version folders)",
    )
    p.add_argument("--weights", default=None, help="the VGG weights the model was trained with")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="the exported convolutions' type: fp32 (default; equal to `vggtransfer predict "
        "--precision fp32`) or bf16 (faster on CPUs with AVX512-BF16 or AMX; outputs within a few %% of fp32)",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=16, help="images per conv batch in the graph (default 16)"
    )
    p.add_argument("--threads", type=positive_int, default=None, help="TensorFlow threads while exporting")
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=None,
        help="largest image the graph decodes, width*height (default: the library's cap); larger "
        "images come back with valid=false",
    )
    p.set_defaults(func=run_export, interrupted="interrupted; nothing was written at --out (rerun the command)")
    return p


def run_export(args) -> int:
    """Export and print where, how big, and the signatures."""
    from vggtransfer.models.modeldir import read_kind

    cfg = read_kind(args.model)  # a clear error before TensorFlow is imported
    from vggtransfer.serving.export import export_saved_model

    rep = export_saved_model(
        args.model,
        args.out,
        precision=args.precision,
        batch_size=args.batch_size,
        weights_path=args.weights,
        threads=args.threads,
        max_pixels=args.max_pixels,
    )
    mb = 1024 * 1024
    print(
        f"exported the {cfg['kind']} model {args.model} to {rep['path']} ({rep['precision']}, "
        f"{rep['size_bytes'] / mb:.1f} MiB on disk, of which conv weights {rep['conv_bytes'] / mb:.1f} MiB)"
    )
    for name, outputs in rep["signatures"].items():
        print(f"  signature {name}: outputs {', '.join(outputs)}")
    return 0
