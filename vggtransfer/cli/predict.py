"""``vggtransfer predict``: image files through a saved model (any kind); bad files are reported per item."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vggtransfer.cli.common import (
    UsageError,
    add_runtime_args,
    add_scale_out_args,
    check_output_file,
    positive_int,
    shown,
)
from vggtransfer.models.predictions import ResultsPathError, check_results_path, predict_rows, write_results


def add_parser(sub, parents):
    """Register ``predict``."""
    p = sub.add_parser(
        "predict",
        parents=parents,
        help="predict image files with a saved model (any kind)",
        description="Predict each IMAGE (a folder: every image file under it) with a saved model. Regressor: "
        "'path<TAB>value'. Classifier (head, linear, fine-tuned): 'path<TAB>class<TAB>probability', the --top-k "
        "best classes per image. A file that cannot be read prints 'path<TAB>error: ...' on stderr; the others "
        "are still predicted, and the exit code is 1. A tab, newline or backslash in a name is printed as \\t, "
        "\\n or \\\\ (a byte that is not UTF-8 as \\xff), so that each line is one image.",
        epilog="example: vggtransfer predict --model models/clf photo1.jpg photo2.png --top-k 2",
    )
    p.add_argument("images", nargs="*", help="image files, or folders: every image file under them, sorted")
    p.add_argument(
        "--list",
        type=Path,
        default=None,
        metavar="FILE",
        help="also predict the image paths in FILE, one per line (relative to FILE's folder; blank lines and "
        "lines starting with # skipped): for more files than a command line holds",
    )
    p.add_argument("--model", required=True, type=Path, help="a model directory saved by `vggtransfer train`")
    p.add_argument(
        "--top-k", type=positive_int, default=None, help="classes to show per image (classifiers; default 1)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON list of {path, prediction|top_k, error}")
    p.add_argument("--weights", default=None, help="the VGG weights the model was trained with")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the results to a file instead: .csv (path,prediction,error, or path,rank,class,"
        "probability,error) or .jsonl (one JSON object per image), in input order, atomically",
    )
    add_scale_out_args(
        p,
        "predict with N worker processes in shards beside --out (needed with --workers); a rerun skips finished shards",
    )
    add_runtime_args(p)
    p.set_defaults(func=run_predict, interrupted="interrupted; rerun the same command")
    return p


def run_predict(args) -> int:
    """Predict and print (or write --out); exit 1 when some image could not be predicted."""
    from vggtransfer.cli.common import explicit
    from vggtransfer.models.modeldir import model_task, read_kind

    args.images = image_arguments(args.images, args.list)
    cfg = read_kind(args.model)
    if model_task(cfg) == "regression" and args.top_k is not None:
        raise UsageError(f"--top-k: {args.model} is a regressor (one value per image); --top-k is for classifiers")
    sharded = explicit(args, "workers") or explicit(args, "ray")
    if sharded and args.out is None:
        raise UsageError("--workers/--ray: give --out FILE.csv or FILE.jsonl for the results")
    if explicit(args, "shard_size") and not sharded:
        raise UsageError("--shard-size: only with --workers or --ray")
    if args.out is not None:
        try:
            check_results_path(args.out)  # before any work
        except ResultsPathError as exc:
            raise UsageError(f"--out {exc}") from None
        check_output_file(args.out, "--out", protect=(args.model,))
    if args.out is not None and args.json:
        raise UsageError("--json and --out: --out FILE.jsonl writes JSON lines")
    if sharded:
        from vggtransfer.cli.common import progress
        from vggtransfer.scale.shards import SHARD_SIZE, predict_sharded

        report, rows = predict_sharded(
            args.model,
            args.images,
            args.out,
            weights=args.weights,
            precision=args.precision,
            top_k=args.top_k,
            workers=args.workers or 2,
            threads=args.threads,
            use_ray=args.ray is not None,
            ray_address=args.ray or None,
            shard_size=args.shard_size or SHARD_SIZE,
            progress=progress(args),
            log=lambda line: print(line, file=sys.stderr),
        )
        return _report_out(args, rows, report)
    from vggtransfer.models.registry import load_model

    model = load_model(args.model, args.weights, precision=args.precision, threads=args.threads)
    rows = predict_rows(model, args.images, args.top_k)
    if args.out is not None:
        write_results(args.out, rows)
        return _report_out(args, rows, None)
    if args.json:
        print(json.dumps(rows, indent=1, allow_nan=False))
    else:
        for r in rows:
            if r["error"]:
                print(f"{field(r['path'])}\terror: {r['error']}", file=sys.stderr)
            elif "top_k" in r:
                for t in r["top_k"]:
                    print(f"{field(r['path'])}\t{field(t['class'])}\t{t['probability']:.4f}")
            else:
                print(f"{field(r['path'])}\t{r['prediction']:.6g}")
    return 1 if any(r["error"] for r in rows) else 0


def field(text: str) -> str:
    """A path or class name as one field of a tab-separated line: backslash, tab, newline and carriage return are
    written as \\\\, \\t, \\n, \\r, so a line is always one image, and a byte of a name that is not UTF-8 as \\xff (any
    terminal prints it). ``--json`` escapes names as JSON does; ``--out`` keeps them as they are on disk."""
    escaped = str(text).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return shown(escaped)


def image_arguments(items, list_file: Path | None = None) -> list:
    """The image paths to predict: each item as given, a folder expanded to the image files under it (sorted, sub-
    folders too, hidden files skipped), then the paths listed in ``list_file``. Raises :class:`UsageError` for a
    folder with no image file, an unreadable list or nothing to predict; a missing file stays an item (reported in
    its row, as an unreadable image is)."""
    from vggtransfer.data.images import IMAGE_EXTENSIONS, list_images

    paths: list = []
    for item in items:
        if Path(item).is_dir():
            found = list_images(item, recursive=True)
            if not found:
                raise UsageError(f"{item}: folder holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
            paths.extend(str(f) for f in found)
        else:
            paths.append(str(item))
    if list_file is not None:
        try:
            lines = list_file.read_text(encoding="utf-8-sig").splitlines()  # a BOM (Notepad, Excel) is not a path
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--list {list_file}: cannot read ({exc})") from None
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                paths.append(line if Path(line).is_absolute() else str(list_file.parent / line))
    if not paths:
        raise UsageError("give IMAGE files or folders, or --list FILE")
    return paths


def _report_out(args, rows, report) -> int:
    bad = [r for r in rows if r["error"]]
    for r in bad:
        print(f"{field(r['path'])}\terror: {r['error']}", file=sys.stderr)
    print(f"{args.out}: {len(rows)} images, {len(bad)} could not be predicted")
    if report is not None and not args.quiet:
        print(report.summary())
    return 1 if bad else 0
