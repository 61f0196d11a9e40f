"""``python -m util.doctor``."""

import sys

from util.doctor.doctor import main

sys.exit(main())
