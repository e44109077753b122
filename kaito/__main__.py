"""`python -m kaito`: the `kaito` console script where it is not installed."""

from __future__ import annotations

import sys

from kaito.cli import main

if __name__ == "__main__":
    sys.exit(main())
