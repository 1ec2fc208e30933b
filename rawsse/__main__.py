"""``python -m rawsse``: the same command line as the ``rawsse`` console script."""

import sys

from rawsse.cli import main

sys.exit(main())
