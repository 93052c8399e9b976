"""`python -m ascrm` runs the `ascrm` command."""

import sys

from ascrm.cli import main

sys.exit(main())
