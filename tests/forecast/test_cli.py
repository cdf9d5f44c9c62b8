import subprocess
import sys

import numpy as np
import pandas as pd
import xarray as xr

from workbench import cli as top_cli
from workbench.forecast import cli


def test_cli_generate_baselines_evaluate(tmp_path, capsys):
    root, out = str(tmp_path / "data"), str(tmp_path / "res")
    assert top_cli.main(["forecast", "generate", "--preset", "tiny", "--root", root]) == 0
    assert "tiny-seed0.zarr" in capsys.readouterr().out
    assert cli.main(["baselines", "--preset", "tiny", "--root", root, "--context", "4", "--methods",
                     "mean", "linear", "tsmixer", "--max-epochs", "1", "--out", out]) == 0   # models are pickled
    assert cli.main(["evaluate", "--preset", "tiny", "--root", root, "--out", out, "--n-boot", "50"]) == 0
    res = xr.open_dataset(tmp_path / "res" / "results.nc")
    assert res["mae"].dims == ("model", "context", "condition", "lead")
    assert set(res["model"].values) == {"mean", "linear", "tsmixer"}
    table = pd.read_csv(tmp_path / "res" / "summary.csv")
    assert set(table["model"]) == {"mean", "linear", "tsmixer"} and np.all(table["mae_lead1"] > 0)
    long = pd.read_csv(tmp_path / "res" / "results.csv")
    assert len(long) == 3 * 9 * 32


def test_cli_errors_and_module_entry(tmp_path, capsys):
    assert cli.main(["evaluate", "--preset", "tiny", "--data", str(tmp_path / "missing.zarr")]) == 2
    assert "no forecast dataset" in capsys.readouterr().err
    r = subprocess.run([sys.executable, "-m", "workbench.forecast", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "generate" in r.stdout
    assert top_cli.main([]) == 2
