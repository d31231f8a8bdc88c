"""``python -m jacobians`` is the ``jacobians`` command (see :mod:`jacobians.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
