"""The feature options shared by ``extract`` and ``train`` (weights, architecture, end point, pooling, input size)."""

from __future__ import annotations

from vggtransfer.cli.common import add_runtime_args, image_size, scales
from vggtransfer.models import defaults
from vggtransfer.weights.npy import ARCHITECTURES

#: Every end point of the architectures (VGG19 adds conv3_4, conv4_4, conv5_4); checked against --arch later.
END_POINTS = (
    "conv1_1",
    "conv1_2",
    "pool1",
    "conv2_1",
    "conv2_2",
    "pool2",
    "conv3_1",
    "conv3_2",
    "conv3_3",
    "conv3_4",
    "pool3",
    "conv4_1",
    "conv4_2",
    "conv4_3",
    "conv4_4",
    "pool4",
    "conv5_1",
    "conv5_2",
    "conv5_3",
    "conv5_4",
    "pool5",
)
POOLINGS = ("flatten", "max", "avg")


def add_feature_args(p, recipes_note: str = "") -> None:
    """--weights, --arch, --scales, --flip, --mirror, --end-point, --pooling, --image-size, then the runtime
    options."""
    g = p.add_argument_group("features")
    g.add_argument(
        "--weights",
        default=None,
        help="VGG conv weights .npy (default: $VGGTRANSFER_WEIGHTS, ./weights, the cache, else a "
        "one-time download; see `vggtransfer fetch-weights`)",
    )
    g.add_argument("--arch", choices=ARCHITECTURES, default=None, help="architecture (default vgg16)")
    g.add_argument(
        "--scales",
        type=scales,
        default=None,
        metavar="PX",
        help="block features (the default): short side(s) of the whole image, comma-separated (default: "
        f"{','.join(map(str, defaults.FEATURES.scales))} for targets, "
        f"{','.join(map(str, defaults.FEATURES_CLASSES.scales))} for classes; with several, "
        "cross-validation chooses the scale or the stack); blocks: global avg and max of "
        f"{', '.join(defaults.FEATURES.end_points)}",
    )
    g.add_argument(
        "--flip",
        action="store_true",
        default=None,
        help="block features: average each block with the mirrored image's (2x the compute; replaces --mirror)",
    )
    g.add_argument(
        "--mirror",
        choices=("yes", "no"),
        default=None,
        help="block features: also keep each image's mirror image as a row of its own; auto trains on both and "
        "averages its predictions over them (2x the compute; default: "
        f"{'yes' if defaults.FEATURES_CLASSES.mirror else 'no'} for classes, "
        f"{'yes' if defaults.FEATURES.mirror else 'no'} for targets)",
    )
    g.add_argument(
        "--end-point",
        choices=END_POINTS,
        default=None,
        metavar="LAYER",
        help=f"one layer's output as the feature, of the square centre crop (classic single-block "
        f"features; default {defaults.CLASSIFIER.end_point}); one of "
        + ", ".join(END_POINTS)
        + " (conv3_4, conv4_4, conv5_4: vgg19 only)",
    )
    g.add_argument(
        "--pooling",
        choices=POOLINGS,
        default=None,
        help="flatten the map, or global max / average pooling (default " + recipes_note + ")",
    )
    g.add_argument(
        "--image-size",
        type=image_size,
        default=None,
        help=f"input side in pixels, >= 32 (default {defaults.IMAGE_SIZE})",
    )
    add_runtime_args(p)


CLASSIC_OPTIONS = ("end_point", "pooling", "image_size")
BLOCK_OPTIONS = ("scales", "flip", "mirror")


def classic_features(args) -> bool:
    """True when --end-point, --pooling or --image-size asks for classic single-block features; refuses them
    together with the block options --scales/--flip/--mirror, naming both."""
    from vggtransfer.cli.common import UsageError, explicit

    classic = [f"--{n.replace('_', '-')}" for n in CLASSIC_OPTIONS if explicit(args, n)]
    block = [f"--{n}" for n in BLOCK_OPTIONS if explicit(args, n)]
    if classic and block:
        raise UsageError(
            f"{', '.join(block)} and {', '.join(classic)}: block features (whole image at --scales) or "
            "one classic block (square crop at --image-size): choose one"
        )
    return bool(classic)


def block_spec(args, task: str = "classification"):
    """The :class:`~vggtransfer.features.spec.FeatureSpec` of the block options (else the default for ``task``; a
    store made by ``extract`` takes the classifiers' default)."""
    import dataclasses

    from vggtransfer.cli.common import UsageError

    spec = defaults.default_features(task)
    changes = {}
    if args.scales is not None:
        changes["scales"] = args.scales
    if args.flip and args.mirror == "yes":
        raise UsageError(
            "--flip and --mirror yes: --flip averages each block with the mirror image's, --mirror keeps the mirror "
            "image as a row of its own; choose one"
        )
    if args.flip:
        changes.update(flip=True, mirror=False)
    elif args.mirror is not None:
        changes["mirror"] = args.mirror == "yes"
    return dataclasses.replace(spec, **changes) if changes else spec


def check_end_point(arch: str, end_point: str) -> None:
    """A ValueError naming --end-point when the layer is not in ``arch`` (conv5_4 on vgg16)."""
    from vggtransfer.weights.npy import conv_layer_names

    names = list(conv_layer_names(arch)) + [f"pool{i}" for i in range(1, 6)]
    if end_point not in names:
        raise ValueError(
            f"--end-point {end_point}: not a layer of {arch} (its layers: "
            f"{', '.join(n for n in END_POINTS if n in names)})"
        )
