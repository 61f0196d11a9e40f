"""Runs localaws's command line (``serve``, ``demo``, ``annotator``, ``faults``)."""

import sys


def main() -> int:
    from localaws.__main__ import main as local_main  # moto: only where the stack runs

    return local_main()


if __name__ == "__main__":
    sys.exit(main())
