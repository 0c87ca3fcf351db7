"""``python -m otp boot|check|tree FILE``."""

from __future__ import annotations

import sys

from ._boot import main

if __name__ == "__main__":
    sys.exit(main())
