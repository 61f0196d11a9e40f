"""``python -m util.thaw``."""

import sys

from util.thaw.thaw import main

sys.exit(main())
