import sys

from runstate.cli import main

sys.exit(main())
