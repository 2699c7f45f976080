"""``vggtransfer extract``: the frozen features of a data set into a resumable HDF5 feature store."""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path

from vggtransfer.cli.common import (
    add_data_args,
    add_scale_out_args,
    announce_precision,
    positive_int,
    progress,
    report_bad,
)
from vggtransfer.cli.features import add_feature_args, block_spec, check_end_point, classic_features
from vggtransfer.data.datasets import DATA_HELP
from vggtransfer.models import defaults


def add_parser(sub, parents):
    """Register ``extract``."""
    p = sub.add_parser(
        "extract",
        parents=parents,
        help="compute the features of a data set into an HDF5 feature store (resumable)",
        description=textwrap.fill(
            "Extract frozen VGG features of every item of DATA into an HDF5 store: features, labels, label "
            "names and source paths, written in chunks (works for data larger than memory). If "
            "interrupted (even kill -9), rerun the same command: it continues where it stopped. By default "
            "each row holds named blocks (global average and max of pool3, pool4, pool5 of the whole image "
            "at --scales), what `train --recipe auto` chooses from; --end-point/--pooling/--image-size make "
            "classic single-block features of the square centre crop instead. The store records the "
            "weights, blocks, scales, preprocessing and precision; reusing it with other settings is "
            "refused, and an existing file that is not a feature store is never overwritten.",
            116,
        ),
        epilog="examples:\n  vggtransfer extract hymenoptera_data/train --store train.h5\n"
        "  vggtransfer extract hymenoptera_data/train --store train.h5 --scales 256,384 --flip\n"
        "  vggtransfer extract hymenoptera_data/train --store classic.h5 --end-point pool5 --pooling avg",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_args(p, DATA_HELP, required=True)
    p.add_argument("--store", required=True, type=Path, help="the HDF5 file to write (or resume)")
    p.add_argument("--split", default="train", help="h5 only: which {split}_set_x/_y to read (default train)")
    p.add_argument(
        "--task",
        choices=("classification", "regression"),
        default="classification",
        help="CSV only: label column (classification, the default) or target column (regression)",
    )
    p.add_argument("--chunk-rows", type=positive_int, default=256, help="rows buffered per write (default 256)")
    add_scale_out_args(
        p,
        "extract with N worker processes (spawned, each with its own TensorFlow session; threads "
        "per worker = cores / N unless --threads), in shards written beside the store and merged "
        "into it; a rerun skips finished shards",
    )
    add_feature_args(p, f"{defaults.STORE_POOLING} with --end-point or --image-size")
    p.set_defaults(func=run_extract)
    return p


def run_extract(args) -> int:
    """Build (or resume) the store; prints ``STORE: done/total items``."""
    from vggtransfer.data.datasets import from_path

    arch = args.arch or "vgg16"
    classic = classic_features(args)
    end_point = args.end_point or defaults.CLASSIFIER.end_point
    if classic:
        check_end_point(arch, end_point)
    from vggtransfer.cli.common import UsageError, check_weights_option, explicit
    from vggtransfer.data.store import build_store, check_store_path, store_status
    from vggtransfer.weights.sources import resolve_weights

    sharded = explicit(args, "workers") or explicit(args, "ray")
    if explicit(args, "shard_size") and not sharded:
        raise UsageError("--shard-size: only with --workers or --ray")
    check_store_path(args.store)  # before the data are read and the weights loaded
    check_weights_option(args)
    ds = from_path(args.data, args.split, args.task, progress(args))
    report_bad(ds, args)
    t0 = time.perf_counter()
    weights = resolve_weights(args.weights, arch=arch, progress=progress(args))
    announce_precision(args)
    if sharded:
        return run_sharded(args, ds, weights, arch, classic, end_point, t0)
    from vggtransfer.features.blocks import BlockExtractor
    from vggtransfer.features.extractor import FeatureExtractor

    if classic:
        fx: FeatureExtractor | BlockExtractor = FeatureExtractor(
            weights,
            arch=arch,
            end_point=end_point,
            pooling=args.pooling or defaults.STORE_POOLING,
            image_size=args.image_size or defaults.IMAGE_SIZE,
            batch_size=args.batch_size,
            precision=args.precision,
            threads=args.threads,
        )
    else:
        spec = block_spec(args)
        announce_precision(args, spec)
        fx = BlockExtractor(
            weights, spec, arch=arch, batch_size=args.batch_size, precision=args.precision, threads=args.threads
        )
    with fx:
        build_store(args.store, ds, fx, chunk_rows=args.chunk_rows, progress=progress(args))
    done, total = store_status(args.store)
    kind = f"{len(ds.classes)} classes" if ds.classes else "regression targets"
    print(f"{args.store}: {done}/{total} items, {kind} ({time.perf_counter() - t0:.0f} s)")
    return 0


def run_sharded(args, ds, weights, arch, classic, end_point, t0) -> int:
    """``extract --workers N`` / ``--ray``: shards over worker processes, merged into the store."""
    import sys

    from vggtransfer.data.store import store_status
    from vggtransfer.scale.shards import SHARD_SIZE, ExtractorSpec, build_store_sharded

    if classic:
        spec = ExtractorSpec(
            str(weights),
            arch=arch,
            end_point=end_point,
            pooling=args.pooling or defaults.STORE_POOLING,
            image_size=args.image_size or defaults.IMAGE_SIZE,
            precision=args.precision,
            batch_size=args.batch_size,
        )
    else:
        spec = ExtractorSpec(
            str(weights),
            arch=arch,
            features=block_spec(args).to_dict(),
            precision=args.precision,
            batch_size=args.batch_size,
        )
    workers = args.workers or 2
    report = build_store_sharded(
        args.store,
        ds,
        spec,
        workers=workers,
        threads=args.threads,
        use_ray=args.ray is not None,
        ray_address=args.ray or None,
        shard_size=args.shard_size or SHARD_SIZE,
        progress=progress(args),
        log=lambda line: print(line, file=sys.stderr),
    )
    done, total = store_status(args.store)
    kind = f"{len(ds.classes)} classes" if ds.classes else "regression targets"
    engine = "Ray" if args.ray is not None else "local processes"
    print(f"{args.store}: {done}/{total} items, {kind} ({time.perf_counter() - t0:.0f} s, {workers} workers, {engine})")
    if not args.quiet:
        print(report.summary())
    return 0
