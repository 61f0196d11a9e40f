import sys

from util.doctor.doctor import main

sys.exit(main())
