"""Hostile-but-honest input at every public entry point of the protocol, baselines, scoring,
metrics, release reader and ZAPBench results: a clear error naming the mistake, or a correct
result, never a silent NaN, a wrong shape or a leak of held-out data.

Classes of input tried (110 test items, about 220 bad inputs): wrong types (non-Dataset,
str for a list, bool / float for an int), out-of-range and empty values, typos in names
(conditions, held-out, split, mode, missing rule, scale), NaN / inf / float32-overflowing data,
missing neurons, mismatched shapes and neuron counts, unfitted estimators, non-forecasters and
forecasters that return the wrong shape.
"""

import json

import numpy as np
import pytest
import xarray as xr
from sklearn.base import clone

from workbench.exceptions import NotFittedError
from workbench.forecast import protocol, segment_means
from workbench.forecast.baselines import BASELINES
from workbench.forecast.bootstrap import block_bootstrap_ci, block_bootstrap_indices
from workbench.forecast.evaluate import evaluate, score_forecaster
from workbench.forecast.metrics import aggregate, window_errors
from workbench.forecast.release import ReleaseLayoutError, open_release
from workbench.forecast.zapbench_results import load_zapbench_results, to_zapbench_records

REL = protocol.RELEASE_CONDITION_OFFSETS
FAST = dict(max_steps=2, check_every=1, max_val_windows=4, device="cpu")
TRAINED = ("linear", "tsmixer", "time-mix", "tide")


def make(name, context=4, **kw):
    cls = BASELINES[name]
    params = cls().get_params()
    extra = {k: v for k, v in FAST.items() if k in params}
    if name == "linear":
        extra.pop("max_val_windows", None)
    return cls(context=context, **{**extra, **kw})


# ---- protocol ------------------------------------------------------------------------------
PROTOCOL_ERRORS = [
    ("heldout typo leaks no data", lambda: protocol.windows(REL, "train", heldout=["taxi"]), ValueError, "heldout"),
    ("unknown condition", lambda: protocol.windows(REL, conditions=["nope"]), ValueError, "unknown conditions"),
    ("condition not a str", lambda: protocol.windows(REL, conditions=[1]), TypeError, "conditions"),
    ("conditions not iterable", lambda: protocol.windows(REL, conditions=3), TypeError, "conditions"),
    ("split typo", lambda: protocol.windows(REL, "Test"), ValueError, "split"),
    ("context 0", lambda: protocol.windows(REL, context=0), ValueError, "context"),
    ("context > 256", lambda: protocol.windows(REL, context=300), ValueError, "context"),
    ("context float", lambda: protocol.windows(REL, context=4.0), TypeError, "context"),
    ("context bool", lambda: protocol.windows(REL, context=True), TypeError, "context"),
    ("horizon 0", lambda: protocol.windows(REL, horizon=0), ValueError, "horizon"),
    ("offsets decreasing", lambda: protocol.windows([0, 5, 3]), ValueError, "offsets"),
    ("offsets one value", lambda: protocol.windows([5]), ValueError, "offsets"),
    ("dataset without attrs", lambda: protocol.windows(xr.Dataset()), ValueError, "attrs"),
    ("condition index", lambda: protocol.condition_bounds(REL, 9), ValueError, "condition"),
    ("split_bounds split", lambda: protocol.split_bounds(REL, 0, "x", 4), ValueError, "split"),
    ("held-out val split", lambda: protocol.split_bounds(REL, 3, "val", 4, heldout=True), ValueError, "held-out"),
    ("gather float starts", lambda: protocol.gather(np.zeros((100, 2)), [1.5], 4, 4), TypeError, "integer"),
    ("gather negative start", lambda: protocol.gather(np.zeros((100, 2)), [-1], 4, 4), ValueError, "outside"),
    ("gather past the end", lambda: protocol.gather(np.zeros((100, 2)), [95], 4, 4), ValueError, "outside"),
    ("gather 3-d traces", lambda: protocol.gather(np.zeros((100, 2, 2)), [0], 4, 4), ValueError, "2-d"),
    ("gather str starts", lambda: protocol.gather(np.zeros((100, 2)), ["a"], 4, 4), TypeError, "integer"),
]


@pytest.mark.parametrize("what, call, exc, match", PROTOCOL_ERRORS, ids=[c[0] for c in PROTOCOL_ERRORS])
def test_protocol_rejects(what, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_protocol_single_names_and_heldout_are_honoured():
    w = protocol.windows(REL, "test", conditions="gain")            # one name, not its letters
    assert set(w["condition"].values) == {"gain"} and w.sizes["window"] == 98
    tr = protocol.windows(REL, "train", heldout="gain")             # a str is one held-out name
    assert "gain" not in set(tr["condition"].values) and "taxis" in set(tr["condition"].values)
    assert protocol.windows(REL, "train", conditions=[]).sizes["window"] == 0


# ---- baselines -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_estimator_contract(tiny, name):
    f = make(name)
    with pytest.raises(NotFittedError):
        f.predict(tiny, [0])
    with pytest.raises(NotFittedError):
        evaluate({name: f}, tiny, n_boot=0)
    g = clone(f)
    assert g.get_params() == f.get_params()
    g.set_params(context=8)
    assert g.context == 8 and f.context == 4
    with pytest.raises(TypeError, match="xarray.Dataset"):
        make(name).fit(tiny["traces"].values)
    for bad in (0, 300, None, "4", True, 4.5):
        with pytest.raises(ValueError, match="context"):
            make(name, context=bad).fit(tiny)
    with pytest.raises(ValueError, match="mode"):
        make(name, mode="zap").fit(tiny)


@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_predict_rejects_bad_windows(tiny, name):
    f = make(name, mode="workbench").fit(tiny)
    n = tiny.sizes["neuron"]
    assert f.predict(tiny, np.array([], dtype=int)).shape == (0, 32, n)
    with pytest.raises(TypeError, match="integer"):
        f.predict(tiny, [1.5])
    with pytest.raises(ValueError, match="outside"):
        f.predict(tiny, [-3])
    with pytest.raises(ValueError, match="outside|past the end"):
        f.predict(tiny, [tiny.sizes["time"] - 2])
    with pytest.raises(ValueError, match="neurons"):
        f.predict(tiny.isel(neuron=slice(0, n - 1)), [0])
    with pytest.raises(TypeError, match="Dataset"):
        f.predict(tiny["traces"], [0])


@pytest.mark.parametrize("name", list(BASELINES))
def test_missing_neuron_is_data_not_poison(tiny, name):
    ds = tiny.copy(deep=True)
    ds["traces"].values[:, 3] = np.nan                     # a missing neuron
    ds["traces"].values[1500:1520, 10] = np.nan            # a gap in another
    f = make(name, mode="workbench").fit(ds)
    if hasattr(f, "history_"):
        assert np.all(np.isfinite(f.history_["train_mae"].values))
    s = protocol.windows(ds, "test", context=4)["start"].values[:30]
    p = f.predict(ds, s)
    others = np.delete(np.arange(ds.sizes["neuron"]), [3, 10])
    assert np.all(np.isfinite(p[:, :, others])), "other neurons must stay finite"
    e, _ = score_forecaster(f, ds, missing="exclude")
    assert np.all(np.isfinite(e["abs_err"].values)) and np.all(e["n_missing"].values >= 1)


@pytest.mark.parametrize("name", TRAINED)
@pytest.mark.parametrize("arg, value", [("batch_size", 0), ("batch_size", -1), ("batch_size", 2.5),
                                        ("batch_size", True), ("lr", float("nan")), ("lr", 0.0),
                                        ("patience", 0), ("max_steps", 0), ("check_every", 0),
                                        ("max_val_windows", 0), ("n_threads", 0)])
def test_trained_baselines_reject_bad_training_arguments(tiny, name, arg, value):
    with pytest.raises(ValueError, match=arg):
        make(name, **{arg: value}).fit(tiny)


@pytest.mark.parametrize("name", TRAINED)
def test_trained_baselines_reject_inf_and_float32_overflow(tiny, name):
    for v, match in ((np.inf, "inf"), (1e300, "float32")):
        ds = tiny.copy(deep=True)
        tr = ds["traces"].values.astype(np.float64)
        tr[100, 2] = v
        ds["traces"] = (("time", "neuron"), tr)
        if name == "linear":
            f = make(name, mode="zapbench")                # AdamW: the torch path
        else:
            f = make(name)
        with pytest.raises(ValueError, match=match):
            f.fit(ds)
    with pytest.raises(ValueError, match="device"):
        make(name, device="tpu-9").fit(tiny)


def test_linear_lstsq_on_nan_traces_is_clear(tiny):
    ds = tiny.copy(deep=True)
    ds["traces"].values[:] = np.nan
    with pytest.raises(ValueError, match="no finite training rows"):
        make("linear", mode="workbench").fit(ds)


# ---- scoring and metrics -------------------------------------------------------------------
class _WrongShape:
    context, horizon = 4, 32

    def fit(self, ds):
        return self

    def predict(self, ds, starts):
        return np.zeros((len(starts), 32, 3))


SCORING_ERRORS = [
    ("no forecasters", lambda t, f: evaluate({}, t), ValueError, "no forecasters"),
    ("not a forecaster", lambda t, f: evaluate(object(), t), TypeError, "not a Forecaster"),
    ("missing rule typo", lambda t, f: evaluate(f, t, missing="drop"), ValueError, "missing"),
    ("batch_size 0", lambda t, f: score_forecaster(f, t, batch_size=0), ValueError, "batch_size"),
    ("batch_size float", lambda t, f: score_forecaster(f, t, batch_size=2.0), ValueError, "batch_size"),
    ("split typo", lambda t, f: evaluate(f, t, split="tst"), ValueError, "split"),
    ("duplicate names", lambda t, f: evaluate([f, f], t, n_boot=0), ValueError, "duplicate"),
    ("wrong forecast shape", lambda t, f: score_forecaster(_WrongShape(), t), ValueError, "shape"),
    ("lacks a variable", lambda t, f: score_forecaster(type("V", (_WrongShape,), {"requires": ("volume",)})(),
                                                       t.drop_vars(["volume", "segmentation"])), ValueError,
     "lacks variables"),
    ("window_errors shapes", lambda t, f: window_errors(np.zeros((2, 3, 4)), np.zeros((2, 3, 5))), ValueError,
     "window, lead, neuron"),
    ("window_errors 2-d", lambda t, f: window_errors(np.zeros((2, 3)), np.zeros((2, 3))), ValueError,
     "window, lead, neuron"),
    ("window_errors rule", lambda t, f: window_errors(np.zeros((1, 1, 1)), np.zeros((1, 1, 1)), "zero"),
     ValueError, "missing"),
    ("aggregate mismatch", lambda t, f: aggregate(window_errors(np.zeros((2, 1, 1)), np.zeros((2, 1, 1))),
                                                  protocol.windows(REL).isel(window=[0])), ValueError, "windows"),
    ("bootstrap ci", lambda t, f: block_bootstrap_ci(np.zeros((5, 1)), ci=1.5), ValueError, "ci"),
    ("bootstrap empty", lambda t, f: block_bootstrap_indices(0), ValueError, "at least one"),
    ("bootstrap block 0", lambda t, f: block_bootstrap_indices(5, block_length=0), ValueError, "block_length"),
    ("segment labels", lambda t, f: segment_means(np.zeros((1, 1, 2, 2)), np.full((1, 2, 2), 9), 3), ValueError,
     "labels"),
    ("segment shape", lambda t, f: segment_means(np.zeros((1, 1, 2, 2)), np.zeros((1, 2, 3), int), 3), ValueError,
     "shape"),
]


@pytest.mark.parametrize("what, call, exc, match", SCORING_ERRORS, ids=[c[0] for c in SCORING_ERRORS])
def test_scoring_rejects(tiny, what, call, exc, match):
    f = make("mean").fit(tiny)
    with pytest.raises(exc, match=match):
        call(tiny, f)


def test_window_errors_nan_and_all_missing_windows():
    p = np.zeros((2, 1, 3))
    t = np.ones((2, 1, 3))
    t[1] = np.nan                                          # a window whose neurons are all missing
    ex = window_errors(p, t, "exclude")
    assert np.isnan(ex["abs_err"].values[1, 0]) and ex["n_missing"].values[1, 0] == 3
    zb = window_errors(p, t, "zapbench")
    assert zb["abs_err"].values[1, 0] == 0.0 and zb["abs_err"].values[0, 0] == 1.0


# ---- release and ZAPBench results -----------------------------------------------------------
def test_release_and_results_reject(tmp_path, tiny):
    with pytest.raises(ReleaseLayoutError, match="does not exist"):
        open_release(tmp_path / "none")
    (tmp_path / "r").mkdir()
    with pytest.raises(ReleaseLayoutError, match="missing array 'traces'"):
        open_release(tmp_path / "r")
    with pytest.raises(TypeError, match="time"):
        open_release(tmp_path / "r", time=(0, 5))
    with pytest.raises(ReleaseLayoutError, match="cannot open|missing"):
        open_release("nosuchprotocol://bucket/x", scale=None)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_zapbench_results(bad)
    bad.write_text(json.dumps({"method": {"0": "mean"}}))
    with pytest.raises(ValueError, match="lacks columns"):
        load_zapbench_results(bad)
    with pytest.raises(ValueError, match="model"):
        to_zapbench_records(xr.Dataset())
