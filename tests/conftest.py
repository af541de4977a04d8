"""Session-wide test settings shared by every area; area fixtures live in their own conftest."""

from __future__ import annotations

import logging

logging.getLogger("ovsdbapp").setLevel(logging.WARNING)
