"""``python -m util.restore``."""

import sys

from util.restore.restore import main

if __name__ == "__main__":
    sys.exit(main())
