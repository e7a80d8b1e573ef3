"""``python -m streampage``: the same as the ``streampage`` command."""

import sys

from .cli import main

if __name__ == "__main__":  # a LocalCluster's worker processes import this module again
    sys.exit(main())
