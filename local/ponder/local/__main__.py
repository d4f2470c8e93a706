"""`python -m ponder.local`: see ponder.local.cli."""

import sys

from ponder.local.cli import main

if __name__ == "__main__":
    sys.exit(main())
