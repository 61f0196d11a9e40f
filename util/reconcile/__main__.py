"""``python -m util.reconcile``."""

import sys

from util.reconcile.reconcile import main

if __name__ == "__main__":
    sys.exit(main())
