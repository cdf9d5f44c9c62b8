"""workbench

Entry point of ``panel serve apps/``: the landing page with a card per dashboard; each card opens
``apps/<name>.py`` in the same server. Do not put dashboard logic here.
"""

from pathlib import Path

from workbench.dashboards.landing import serve_workbench

serve_workbench(Path(__file__).resolve().parent)
