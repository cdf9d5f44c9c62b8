"""Where generated data lives: ``$WORKBENCH_DATA`` if set, else the repository's ``data/`` folder."""

import os
from pathlib import Path

__all__ = ["DATA_DIR"]

DATA_DIR = Path(os.environ.get("WORKBENCH_DATA", Path(__file__).resolve().parents[1] / "data"))
