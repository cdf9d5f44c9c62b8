"""``python -m workbench.forecast ...`` = ``workbench forecast ...``."""

import sys

from .cli import main

sys.exit(main())
