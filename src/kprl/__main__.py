"""``python -m kprl``: the ``kprl`` command, for environments where the console script is not on PATH."""

import sys

from kprl.cli import main

sys.exit(main())
