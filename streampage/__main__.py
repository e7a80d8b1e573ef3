"""``python -m streampage``: the same as the ``streampage`` command."""

import sys

from .cli import main

sys.exit(main())
