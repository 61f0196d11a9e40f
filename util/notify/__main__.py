"""``python -m util.notify``."""

import sys

from util.notify.notify import main

if __name__ == "__main__":
    sys.exit(main())
