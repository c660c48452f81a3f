"""`python -m console ...`: the same as `maas console ...` (how `maas up` starts it)."""

from __future__ import annotations

import sys

from maas.cli.console import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
