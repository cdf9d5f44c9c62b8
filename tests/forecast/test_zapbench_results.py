"""Results in ZAPBench's layouts: per-condition JSONs, the published table, side by side."""

import json

import numpy as np
import pandas as pd
import pytest

from workbench.forecast import evaluate, summarize
from workbench.forecast.baselines import MeanBaseline, StimulusBaseline
from workbench.forecast.zapbench_results import (
    load_zapbench_results,
    to_zapbench_records,
    write_zapbench_json,
)


@pytest.fixture(scope="module")
def results(tiny):
    fs = [MeanBaseline(4).fit(tiny), StimulusBaseline(4).fit(tiny), MeanBaseline(16).fit(tiny)]
    return evaluate(fs, tiny, n_boot=0)


def test_records_and_evaluation_jsons_round_trip(results, tmp_path):
    rec = to_zapbench_records(results)
    assert list(rec.columns[:6]) == ["method", "context", "condition", "steps_ahead", "MAE", "MSE"]
    assert len(rec) == 3 * 9 * 32                                   # model x context present, 9 conditions, 32 leads
    row = rec[(rec.method == "mean") & (rec.context == 16) & (rec.condition == "dots") & (rec.steps_ahead == 5)]
    assert float(row.MAE.iloc[0]) == float(results["mae"].sel(model="mean", context=16, condition="dots", lead=5))
    paths = write_zapbench_json(results, tmp_path / "eval")
    names = {p.name for p in paths}
    assert "test_holdout_condition_3.json" in names and "test_condition_0.json" in names
    doc = json.loads((tmp_path / "eval" / "mean" / "C4" / "test_condition_1.json").read_text())
    assert doc["infer_test_condition_1_mae_step/1"] == float(results["mae"].sel(model="mean", context=4,
                                                                                 condition="dots", lead=1))
    back = load_zapbench_results(tmp_path / "eval")
    merged = back.merge(rec, on=["method", "context", "condition", "steps_ahead"], suffixes=("_json", ""))
    assert len(merged) == len(rec)
    np.testing.assert_allclose(merged["MAE_json"], merged["MAE"])


def test_summarize_next_to_zapbench(results, tmp_path):
    rec = to_zapbench_records(results)
    theirs = rec.assign(MAE=rec.MAE * 2.0, xid="1/1")
    seeds = pd.concat([theirs, theirs.assign(MAE=theirs.MAE + 0.01, xid="1/2")])   # two seeds
    path = tmp_path / "combined.json"
    path.write_text(seeds.to_json(orient="records"))
    table = summarize(results, reference=str(path))
    for ld in (1, 4, 32):
        np.testing.assert_allclose(table[f"zapbench_mae_lead{ld}"], 2 * table[f"mae_lead{ld}"] + 0.005, rtol=1e-9)
    cols = tmp_path / "columns.json"
    cols.write_text(seeds.reset_index(drop=True).to_json(orient="columns"))         # pandas' default layout
    assert len(load_zapbench_results(cols)) == len(seeds)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"method": "mean", "context": 4}]))
    with pytest.raises(ValueError, match="lacks columns"):
        load_zapbench_results(bad)
    with pytest.raises(FileNotFoundError):
        load_zapbench_results(tmp_path / "none.json")
