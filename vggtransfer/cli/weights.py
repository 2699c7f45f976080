"""The ``fetch-weights`` and ``convert`` subcommands; ``cli.py`` registers them on its subparsers.

Each handler prints a short result and returns an exit code; errors follow :mod:`vggtransfer.cli.common`.
"""

from __future__ import annotations

import time
from pathlib import Path

from vggtransfer.cli.common import progress
from vggtransfer.weights import sources as ws
from vggtransfer.weights.npy import ARCHITECTURES, WeightsError, file_sha256, list_layers


def add_fetch_weights_parser(subparsers, parents=()):
    """Register ``fetch-weights [--arch vgg16] [--cache-dir D] [--source NAME] [--force]``."""
    p = subparsers.add_parser(
        "fetch-weights",
        parents=list(parents),
        help="download ImageNet VGG weights into the cache",
        description="Download, verify and convert ImageNet VGG conv weights into the cache as "
        "{arch}_conv_imagenet.npy. Sources: " + "; ".join(f"{s.name} ({s.arch}, {s.origin})" for s in ws.SOURCES),
    )
    p.add_argument(
        "--arch", choices=ARCHITECTURES, default=None, help="architecture (default: the --source's, else vgg16)"
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"cache folder (default: ${ws.ENV_CACHE}, else ./weights if present, else ~/.cache/vggtransfer)",
    )
    p.add_argument(
        "--source",
        choices=[s.name for s in ws.SOURCES],
        default=None,
        help="fetch from this source only (default: try the arch's sources in order)",
    )
    p.add_argument("--force", action="store_true", help="fetch even if the cache already has the file")
    p.set_defaults(func=run_fetch_weights, interrupted="interrupted; nothing was cached. Rerun the same command")
    return p


def run_fetch_weights(args) -> int:
    """Fetch into the cache unless it already holds the file (``--force`` fetches again)."""
    source = ws.get_source(args.source) if args.source else None
    arch = args.arch or (source.arch if source else "vgg16")
    if source is not None and source.arch != arch:
        raise WeightsError(source.name, f"is a {source.arch} source; --arch {arch} asks for another architecture")
    cache_dir = args.cache_dir.expanduser() if args.cache_dir else ws.default_cache_dir()
    target = cache_dir / ws.cache_file_name(arch)
    if target.is_file() and not args.force:
        print(f"{target}: already cached (sha256 {file_sha256(target)}); --force to fetch again")
        return 0
    start = time.monotonic()
    sources = (source,) if source else None
    path = ws.fetch_first(arch, target, sources=sources, progress=progress(args))
    print(f"{path}: {len(list_layers(path))} layers, sha256 {file_sha256(path)} ({time.monotonic() - start:.1f} s)")
    return 0


def add_convert_parser(subparsers, parents=()):
    """Register ``convert KERAS_H5 OUT_NPY [--arch]``."""
    p = subparsers.add_parser(
        "convert",
        parents=list(parents),
        help="convert a Keras VGG16/VGG19 .h5 weight file to the vgg16.npy layout",
        description="Convert Keras VGG weights (legacy .h5, whole-model .h5 or Keras 3 .weights.h5; with or without "
        "the top) to a vgg16.npy-layout file; fc1/fc2/predictions become fc6/fc7/fc8.",
    )
    p.add_argument("keras_h5", type=Path, metavar="KERAS_H5")
    p.add_argument("out_npy", type=Path, metavar="OUT_NPY")
    p.add_argument("--arch", choices=ARCHITECTURES, default=None, help="architecture (default: detected)")
    p.set_defaults(func=run_convert)
    return p


def run_convert(args) -> int:
    """Convert and print the layers written and the sha256."""
    out = ws.convert_keras_h5(args.keras_h5, args.out_npy, arch=args.arch)
    layers = list_layers(out)
    print(f"{out}: {len(layers)} layers ({', '.join(layers)}), sha256 {file_sha256(out)}")
    return 0
