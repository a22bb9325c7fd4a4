"""``python3 -m bangor``: the `bangor` command, for when its script is not on PATH."""

import sys

from bangor.cli import main

sys.exit(main())
