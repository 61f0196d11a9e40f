"""``python -m util.archive``."""

import sys

from util.archive.archive import main

sys.exit(main())
