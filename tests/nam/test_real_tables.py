"""The real tables of workbench.datasets.REAL_TABLES and a tiny run of the real-table benchmark
(the full run is ``benchmarks/bench_lanam.py --real``; CI only checks that it works)."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.datasets import REAL_TABLES, available_tables, load_real


def test_registry_mixes_tasks_and_names_its_sources():
    assert len(REAL_TABLES) >= 6
    tasks = {t.task for t in REAL_TABLES.values()}
    assert tasks == {"regression", "classification"}
    assert {"diabetes", "breast_cancer"} <= set(available_tables())
    for name, t in REAL_TABLES.items():
        assert t.name == name and t.source and t.description
    with pytest.raises(ValueError, match="unknown real table 'nope'.*penguins"):
        load_real("nope")


@pytest.mark.parametrize("name", list(REAL_TABLES))
def test_loader(name):
    table = REAL_TABLES[name]
    if table.package and importlib.util.find_spec(table.package.split(".")[0]) is None:
        with pytest.raises(ImportError, match=table.package.split(".")[0]):
            table.load()
        pytest.skip(f"{table.package} is not installed here (benchmarks extra)")
    X, y, task = table.load()
    assert isinstance(X, pd.DataFrame) and isinstance(y, pd.Series) and len(X) == len(y) >= 200
    assert task == table.task and y.notna().all()
    if task == "classification":
        assert set(np.unique(y)) == {0, 1}
    if name in ("penguins", "fertility"):
        assert X.isna().any().any()  # the tables with missing values
    if name == "randhie":
        assert len(X) > 10_000


def test_tiny_real_benchmark_run(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_lanam_real import run_real, with_permuted_columns

    X, _, _ = load_real("diabetes")
    Xp, nulls = with_permuted_columns(X)
    assert len(nulls) == 2 and all(n.startswith("perm_") for n in nulls)
    for n in nulls:  # same values, other order
        src = Xp[n.removeprefix("perm_")]
        assert sorted(Xp[n].astype(str)) == sorted(src.astype(str)) and not Xp[n].equals(src)
    lanam = dict(n_epochs=4, n_epochs_burnin=1, marglik_frequency=2, n_hidden=8, device="cpu")
    per_fold, summary, diffs, selection = run_real(["diabetes"], ["LA-NAM", "linear"], n_folds=2, lanam=lanam,
                                                   verbose=False)
    assert len(per_fold) == 4 and set(summary.model) == {"LA-NAM", "linear"}
    assert np.isfinite(summary[["mean", "NLL", "coverage"]].to_numpy()).all()
    assert diffs.loc[0, "peer"] == "linear" and "NLL goal met" in diffs
    assert len(selection) == 2 and {"nulls off", "nulls below all", "nulls ok"} <= set(selection.columns)
