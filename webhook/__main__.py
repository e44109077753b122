"""`python -m webhook serve|bootstrap`: `kaito webhook`'s subcommands without the core CLI.

Why: the webhook image and the tests can start the server even where the `kaito` console
script is not installed. Must not: add options of its own; it only reuses `webhook.cli`.
"""

from __future__ import annotations

import argparse
import sys

from webhook.cli import register


def main(argv: list[str] | None = None) -> int:
    """Parse `serve ...` / `bootstrap ...` and run it."""
    parser = argparse.ArgumentParser(prog="python -m webhook")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["webhook", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
