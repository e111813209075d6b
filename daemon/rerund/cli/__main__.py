"""``python -m rerund.cli``: the same as the ``rerund`` command."""

import sys

from rerund.cli import main

sys.exit(main())
