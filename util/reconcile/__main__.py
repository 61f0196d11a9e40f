import sys

from util.reconcile.reconcile import main

sys.exit(main())
