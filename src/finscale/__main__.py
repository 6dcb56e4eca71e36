import sys

from finscale.cli import main

sys.exit(main())
