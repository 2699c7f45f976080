"""``python -m vggtransfer.cli``: the ``vggtransfer`` command."""

import sys

from . import main

sys.exit(main())
