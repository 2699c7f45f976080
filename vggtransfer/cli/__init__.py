"""The ``vggtransfer`` command line: one module per command, one error convention (:mod:`.common`).

The parser is built and the arguments checked without importing TensorFlow; each command imports the library
pieces it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys

from vggtransfer.cli.common import common_options, run, terminal_streams


def build_parser() -> argparse.ArgumentParser:
    """The ``vggtransfer`` parser with every subcommand."""
    from vggtransfer import __version__
    from vggtransfer.cli import evaluate, export, extract, predict, train
    from vggtransfer.cli.download import add_download_parser
    from vggtransfer.cli.weights import add_convert_parser, add_fetch_weights_parser

    parser = argparse.ArgumentParser(
        prog="vggtransfer",
        description="Transfer learning from ImageNet VGG16/VGG19 on a CPU.\n\nTypical session:\n"
        "  vggtransfer train --data photos/ --model models/mine      (photos/<class>/<image>)\n"
        "  vggtransfer predict --model models/mine new.jpg\n\n"
        "Run `vggtransfer COMMAND --help` for each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vggtransfer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parents = [common_options()]
    add_fetch_weights_parser(sub, parents)
    add_convert_parser(sub, parents)
    add_download_parser(sub, parents)
    extract.add_parser(sub, parents)
    train.add_parser(sub, parents)
    evaluate.add_parser(sub, parents)
    predict.add_parser(sub, parents)
    export.add_parser(sub, parents)
    for command in sub.choices.values():  # so an unknown option is reported with its command's usage
        command.set_defaults(command_parser=command)
    return parser


def main(argv=None) -> int:
    """Parse ``argv`` (default: the command line) and run the command; returns the exit code."""
    terminal_streams()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would report it with the top-level usage; the command's own usage is the helpful one
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
