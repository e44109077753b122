"""`python -m reconciler`: the same as `kaito reconcile` (the CronJob's entry point)."""

from __future__ import annotations

import sys

from reconciler.cli import main

if __name__ == "__main__":
    sys.exit(main())
