"""The ``vggtransfer`` command line."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .cli_download import add_download_parser
from .cli_weights import add_convert_parser, add_fetch_weights_parser


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="vggtransfer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"vggtransfer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_fetch_weights_parser(sub)
    add_convert_parser(sub)
    add_download_parser(sub)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
