"""``python -m lenet5.web [CHECKPOINT|RUN_DIR ...] [--port N] ...``: ``lenet5 serve`` without the CLI."""

from __future__ import annotations

import argparse
import sys

from ..errors import Lenet5Error
from . import configure_parser, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lenet5.web", description=(__doc__ or "").strip())
    configure_parser(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except Lenet5Error as e:
        print(f"lenet5: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
