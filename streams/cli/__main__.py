"""``python -m streams.cli.main``: the ``opsloop`` command."""

import sys

from streams.cli.main import main

sys.exit(main())
