"""The tutorials are stored as JupyterLab writes them (so opening one does not mark it modified),
with outputs stripped, and each loads its plotting resources through ``setup_plotting``."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _script():
    spec = importlib.util.spec_from_file_location(
        "normalize_notebooks", ROOT / "scripts" / "normalize_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_tutorials():
    assert len(NOTEBOOKS) >= 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_normalized(path):
    assert _script().check_file(path), (
        f"{path.name} is not stored as JupyterLab writes it (or has outputs): "
        "run `python scripts/normalize_notebooks.py`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_one_plotting_setup_before_hvplot(path):
    code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                     if c["cell_type"] == "code")
    assert "setup_plotting()" in code, f"{path.name} does not call setup_plotting()"
    first_hvplot = min((code.find(s) for s in ("import hvplot", "hv.extension", "pn.extension")
                        if s in code), default=len(code))
    assert code.find("setup_plotting()") < first_hvplot, (
        f"{path.name}: setup_plotting() must run before hvplot/extension calls")
    assert "hv.extension(" not in code and "pn.extension(" not in code, (
        f"{path.name}: load the extensions through setup_plotting() only")


def test_normalize_strips_outputs_and_sets_kernelspec(tmp_path):
    mod = _script()
    nb = {"cells": [{"cell_type": "code", "execution_count": 3, "metadata": {"scrolled": True},
                     "outputs": [{"output_type": "stream", "name": "stdout", "text": "x"}],
                     "source": "print(1)\nprint(2)"}],
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                      "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 4}
    path = tmp_path / "a.ipynb"
    path.write_text(json.dumps(nb))
    assert not mod.check_file(path)
    assert mod.main(["--check", str(path)]) == 1
    assert mod.main([str(path)]) == 0
    assert mod.check_file(path)
    out = json.loads(path.read_text())
    cell = out["cells"][0]
    assert cell["outputs"] == [] and cell["execution_count"] is None and cell["metadata"] == {}
    assert cell["source"] == ["print(1)\n", "print(2)"] and cell["id"]
    assert out["metadata"]["kernelspec"]["display_name"] == "Python 3 (ipykernel)"
    assert out["nbformat_minor"] == 5


def test_equivariance_notebook_finds_its_shipped_runs():
    """04 loads finished runs from data/fixtures/equivariance; if a rename of the cache files or
    a RUN_FORMAT_VERSION bump makes them unreachable, the notebook would retrain for minutes."""
    import ast

    from workbench.equivariance.runs import run_path

    nb = json.loads((ROOT / "notebooks" / "04_equivariance.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    settings = {}
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                getattr(node.targets[0], "id", None) in ("RECIPE", "LILA"):
            settings[node.targets[0].id] = eval(compile(ast.Expression(node.value), "04", "eval"))
    assert set(settings) == {"RECIPE", "LILA"}
    runs = ROOT / "data" / "fixtures" / "equivariance"
    wanted = [run_path("equivariance", runs, task=t, model="soft", random_state=0,
                       **settings["RECIPE"]) for t in ("translated", "quadrant")]
    wanted.append(run_path("invariance", runs, learn_invariance=True, random_state=0,
                           **settings["LILA"]))
    missing = [p.name for p in wanted if not p.is_file()]
    assert not missing, f"04's cached runs are missing (rerun the notebook once to cache): {missing}"
