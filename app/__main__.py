"""``python -m app``: the same as the ``numanet-app`` command."""

import sys

from app.cli import main

sys.exit(main())
