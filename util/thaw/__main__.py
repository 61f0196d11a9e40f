"""``python -m util.thaw``."""

import sys

from util.thaw.thaw import main

if __name__ == "__main__":
    sys.exit(main())
