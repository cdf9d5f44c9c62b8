"""Store the tutorial notebooks the way JupyterLab writes them, with outputs stripped.

JupyterLab rewrites a notebook's ``kernelspec`` and ``language_info`` as soon as the kernel
starts; when the stored values differ, the notebook is marked modified on opening and closing it
asks "save changes?". This script writes exactly what JupyterLab 4 writes for the project's
``python3`` (ipykernel) kernel, nbformat 4.5 with cell ids, and strips outputs, execution counts
and per-cell run metadata (``execution``, ``collapsed``, ``scrolled``).

    python scripts/normalize_notebooks.py            # rewrite notebooks/*.ipynb in place
    python scripts/normalize_notebooks.py --check    # exit 1 and list files that would change

``tests/test_notebooks_normalized.py`` runs the check.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
# what ipykernel reports in kernel_info and JupyterLab copies into the notebook when the kernel
# connects; ``version`` is the full Python version, so it is the one of the project's reference
# interpreter (the Python 3.11 of `make setup`): with another interpreter JupyterLab updates it
PYTHON_VERSION = "3.11.7"
LANGUAGE_INFO = {
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
}
CELL_METADATA_DROP = ("execution", "collapsed", "scrolled", "ExecuteTime")


def _source(src) -> list[str]:
    """Cell source as nbformat's JSON list of lines (JupyterLab writes it this way)."""
    text = "".join(src) if isinstance(src, list) else src
    lines = text.splitlines(keepends=True)
    return lines


def normalize(nb: dict, python_version: str = PYTHON_VERSION) -> dict:
    """The notebook as JupyterLab would save it after a fresh open, outputs stripped."""
    out = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    meta = {k: v for k, v in nb.get("metadata", {}).items()
            if k not in ("kernelspec", "language_info", "widgets")}
    language_info = dict(LANGUAGE_INFO, version=python_version)
    out["metadata"] = {**meta, "kernelspec": dict(KERNELSPEC), "language_info": language_info}
    seen = set()
    for cell in nb["cells"]:
        cid = cell.get("id") or uuid.uuid4().hex[:8]
        while cid in seen:
            cid = uuid.uuid4().hex[:8]
        seen.add(cid)
        new = {"cell_type": cell["cell_type"], "id": cid,
               "metadata": {k: v for k, v in cell.get("metadata", {}).items()
                            if k not in CELL_METADATA_DROP}}
        if cell["cell_type"] == "code":
            new["execution_count"] = None
            new["outputs"] = []
        elif "attachments" in cell:
            new["attachments"] = cell["attachments"]
        new["source"] = _source(cell.get("source", ""))
        out["cells"].append(new)
    return out


def dumps(nb: dict) -> str:
    """JupyterLab's on-disk JSON: indent 1, sorted keys, non-ASCII kept, trailing newline."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def check_file(path: Path) -> bool:
    """True if ``path`` is already stored normalized."""
    text = path.read_text(encoding="utf-8")
    return text == dumps(normalize(json.loads(text)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path,
                        help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="report, do not rewrite")
    args = parser.parse_args(argv)
    paths = args.paths or sorted((ROOT / "notebooks").glob("*.ipynb"))
    stale = []
    for path in paths:
        if check_file(path):
            continue
        stale.append(path)
        if not args.check:
            text = dumps(normalize(json.loads(path.read_text(encoding="utf-8"))))
            tmp = path.with_suffix(".ipynb.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
    for path in stale:
        print(("not normalized: " if args.check else "normalized: ") + str(path))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
