"""``python -m vggtransfer``: the command-line interface, where the ``vggtransfer`` console script is not on PATH
(an environment used without activating it). The same parser, commands and exit codes (:mod:`vggtransfer.cli`)."""

import sys

from vggtransfer.cli import main

if __name__ == "__main__":
    sys.exit(main())
