"""``python -m eges <command>``: the same as the ``eges`` console script (:mod:`eges.cli`)."""

import sys

from eges.cli import main

sys.exit(main())
