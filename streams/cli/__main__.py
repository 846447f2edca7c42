"""``python -m streams.cli``: the ``opsloop`` command."""

import sys

from streams.cli.main import main

sys.exit(main())
