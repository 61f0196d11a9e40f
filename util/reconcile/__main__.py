"""``python -m util.reconcile``."""

import sys

from util.reconcile.reconcile import main

sys.exit(main())
