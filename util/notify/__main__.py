"""``python -m util.notify``."""

import sys

from util.notify.notify import main

sys.exit(main())
