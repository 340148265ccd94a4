"""`python -m mtz_mobile.cli`: the same as the `mtz-mobile` script."""

import sys

from mtz_mobile.cli import main

sys.exit(main())
