"""The ``vggtransfer`` command line: a thin layer over the library (each subcommand lives in a cli_* module)."""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .cli_download import add_download_parser
    from .cli_recipes import add_evaluate_parser, add_extract_parser, add_predict_parser, add_train_parser
    from .cli_weights import add_convert_parser, add_fetch_weights_parser

    parser = argparse.ArgumentParser(
        prog="vggtransfer",
        description="Transfer learning from ImageNet VGG16/VGG19 on a CPU. Typical session: "
                    "`vggtransfer train --data photos/ --model models/mine` (photos/<class>/<image>), then "
                    "`vggtransfer predict --model models/mine new.jpg`. Run `vggtransfer COMMAND --help` for each "
                    "command.")
    parser.add_argument("--version", action="version", version=f"vggtransfer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_fetch_weights_parser(sub)
    add_convert_parser(sub)
    add_download_parser(sub)
    add_extract_parser(sub)
    add_train_parser(sub)
    add_evaluate_parser(sub)
    add_predict_parser(sub)
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
