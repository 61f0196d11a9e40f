"""``python -m util.restore``."""

import sys

from util.restore.restore import main

sys.exit(main())
