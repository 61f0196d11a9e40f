"""``python -m util.archive``."""

import sys

from util.archive.archive import main

if __name__ == "__main__":
    sys.exit(main())
