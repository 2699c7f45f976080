"""``python -m vggtransfer.cli``: the ``vggtransfer`` command."""

import sys

from vggtransfer.cli import main

sys.exit(main())
