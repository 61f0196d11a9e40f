"""``python -m util.doctor``."""

import sys

from util.doctor.doctor import main

if __name__ == "__main__":
    sys.exit(main())
