"""`raftui` entry point."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("raftui: the console is not built yet (see issue 5)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
