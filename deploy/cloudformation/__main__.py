"""``python -m deploy.cloudformation write``: regenerate deploy/cloudformation/gas.yaml."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy.cloudformation import text

TEMPLATE = Path(__file__).resolve().parent / "gas.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.cloudformation", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["write"], help="write gas.yaml")
    parser.parse_args(argv)
    TEMPLATE.write_text(text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
