"""Suite-wide settings."""

from __future__ import annotations

import os

from hypothesis import settings

# CI runs the same examples every time (a red build must mean a change, not a new draw);
# local runs keep drawing new examples.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
