"""Video forecaster training: exact checkpoint resume, DDP equivalence, masked loss, bad input."""

import numpy as np
import pytest
import torch

from tests.forecast.video_data import SHAPE, random_walk_volume
from workbench.exceptions import NotFittedError
from workbench.forecast.video import VideoForecaster, fit_distributed


def _data(t=80, seed=0):
    return random_walk_volume(t, seed)


def _est(**kw):
    # tests comparing two runs pin the device (a GPU machine would otherwise pick CUDA)
    kw = {**dict(context=3, horizon=4, widths=(4, 8), emb_dim=8, batch_size=2, n_steps=6, lr=1e-2,
                 warmup_steps=2, n_threads=1, device="cpu"), **kw}
    return VideoForecaster(**kw)


def _states_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_resume_is_bit_for_bit(tmp_path, device):
    vol, seg, starts = _data()
    full = _est(device=device).fit_arrays(vol, seg, starts)
    part = _est(device=device).fit_arrays(vol, seg, starts, stop_at_step=3)
    assert part.step_ == 3
    part.save_checkpoint(tmp_path / "ck.pt")
    resumed = _est(device=device).fit_arrays(vol, seg, starts, resume_from=tmp_path / "ck.pt")
    assert resumed.step_ == 6
    assert _states_equal(full.model_.state_dict(), resumed.model_.state_dict())
    np.testing.assert_array_equal(full.history_["loss"].values, resumed.history_["loss"].values)
    # a continued optimiser is part of the state: the Adam moments agree too
    sa, sb = full._opt.state_dict()["state"], resumed._opt.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)
    # and a predicting estimator rebuilt from the final checkpoint reproduces the forecasts
    resumed.save_checkpoint(tmp_path / "final.pt")
    back = VideoForecaster.from_checkpoint(tmp_path / "final.pt", device=device)
    np.testing.assert_array_equal(back.predict_arrays(vol, [60, 61]), resumed.predict_arrays(vol, [60, 61]))


def test_rng_states_come_back_as_cpu_bytes_whatever_map_location_did(tmp_path):
    """#17.2: ``map_location=cuda`` moved the saved CPU RNG state and ``set_rng_state`` raised."""
    from workbench.forecast.video.checkpoint import load_checkpoint, rng_state, set_rng_state

    vol, seg, starts = _data()
    part = _est().fit_arrays(vol, seg, starts, stop_at_step=2)
    part.save_checkpoint(tmp_path / "ck.pt")
    seen = []

    def move(storage, location):   # stands in for "cuda": records and re-types every storage
        seen.append(location)
        return storage

    ck = load_checkpoint(tmp_path / "ck.pt", map_location=move)
    assert seen, "map_location was not applied"
    for key in ("torch", "sampler"):
        st = ck["rng"][key]
        assert st.device.type == "cpu" and st.dtype == torch.uint8
    # a state whose tensors were moved / re-typed (as ``map_location`` to another device does) is
    # brought back to CPU bytes before torch's setters see it
    state = rng_state(torch.Generator().manual_seed(5))
    moved = {**state, "torch": state["torch"].to(torch.int64), "sampler": state["sampler"].numpy()}
    gen = torch.Generator()
    set_rng_state(moved, gen)
    assert torch.equal(gen.get_state(), state["sampler"])
    assert torch.equal(torch.get_rng_state(), state["torch"])


def test_corrupt_checkpoint_names_the_file(tmp_path):
    vol, seg, starts = _data()
    _est(n_steps=1).fit_arrays(vol, seg, starts).save_checkpoint(tmp_path / "ck.pt")
    raw = (tmp_path / "ck.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cut.pt.*truncated or corrupt"):
        VideoForecaster.from_checkpoint(tmp_path / "cut.pt")


def test_stimulus_conditioned_forecaster_round_trips_through_its_checkpoint(tmp_path):
    vol, seg, starts = _data()
    stim = np.random.default_rng(3).normal(size=(vol.shape[0], 3)) * [1.0, 5.0, 0.2] + [0.0, 2.0, -1.0]
    est = _est(stimulus=True, dtype="float64").fit_arrays(vol, seg, starts, stim)
    est.save_checkpoint(tmp_path / "ck.pt")
    back = VideoForecaster.from_checkpoint(tmp_path / "ck.pt")
    assert back.stimulus and back.n_stimulus_features_ == 3
    torch.testing.assert_close(back.stim_mean_, est.stim_mean_, rtol=0, atol=0)
    torch.testing.assert_close(back.stim_scale_, est.stim_scale_, rtol=0, atol=0)
    np.testing.assert_array_equal(back.predict_arrays(vol, [60, 61], stimulus=stim),
                                  est.predict_arrays(vol, [60, 61], stimulus=stim))
    # the stimulus features of each window are used: other features give another forecast
    assert not np.array_equal(back.predict_arrays(vol, [60], stimulus=stim[::-1].copy()),
                              est.predict_arrays(vol, [60], stimulus=stim))
    with pytest.raises(ValueError, match="pass stimulus"):
        back.predict_arrays(vol, [60])
    # a checkpoint written without the stimulus normalisation is refused with a clear error
    old = torch.load(tmp_path / "ck.pt", weights_only=False)
    del old["extra"]["stim_mean"], old["extra"]["stim_scale"]
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="old.pt.*stimulus normalisation"):
        VideoForecaster.from_checkpoint(tmp_path / "old.pt")


def test_periodic_checkpoint_is_written_atomically(tmp_path):
    vol, seg, starts = _data()
    path = tmp_path / "sub" / "ck.pt"
    _est(checkpoint_path=str(path), checkpoint_every=2).fit_arrays(vol, seg, starts, stop_at_step=4)
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    assert torch.load(path, weights_only=False)["step"] == 4


@pytest.mark.slow
def test_ddp_two_processes_match_single_process_large_batch():
    vol, seg, starts = _data()
    est = _est(batch_size=2, n_steps=4, dtype="float64")
    fitted, states = fit_distributed(est, vol, seg, starts, nprocs=2, backend="gloo")
    assert _states_equal(states[0], states[1]), "ranks ended with different weights"
    # rank r trains on slice r of the shared global batch: same samples as one process with 2 b
    single = _est(batch_size=4, n_steps=4, dtype="float64").fit_arrays(vol, seg, starts)
    for k, v in single.model_.state_dict().items():
        torch.testing.assert_close(states[0][k], v, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(fitted.predict_arrays(vol, [60]), single.predict_arrays(vol, [60]),
                               rtol=1e-9, atol=1e-10)


def test_training_reduces_masked_mae_and_ignores_background():
    _, seg, _ = _data()
    rng = np.random.default_rng(1)
    # decaying bursts: persistence (the untrained network) is wrong by a lead-dependent factor
    t = np.arange(60)
    amp = np.exp(-(t % 12) / 3.0)[:, None, None, None]
    vol = (amp * (1.0 + rng.normal(size=(1, *SHAPE)))).astype(np.float32)
    est = _est(n_steps=24, batch_size=4, lr=1e-2, horizon=2, context=2).fit_arrays(vol, seg, np.arange(50))
    loss = est.history_["loss"].values
    assert loss[-6:].mean() < 0.8 * loss[:6].mean()
    # background voxels do not enter the loss
    pred = torch.zeros(1, *SHAPE)
    target = torch.zeros(1, *SHAPE)
    target[0][torch.as_tensor(seg == 0)] = 100.0
    assert float(VideoForecaster.masked_mae(pred, target, torch.as_tensor(seg > 0))) == 0.0


def test_float64_in_float64_out():
    vol, seg, starts = _data()
    est = _est(dtype="float64", n_steps=1).fit_arrays(vol.astype(np.float64), seg, starts)
    assert next(est.model_.parameters()).dtype == torch.float64


def test_bad_input_names_the_argument():
    vol, seg, starts = _data()
    with pytest.raises(ValueError, match="segmentation shape"):
        _est().fit_arrays(vol, seg[:, :4], starts)
    with pytest.raises(ValueError, match="volume must be 4-d"):
        _est().fit_arrays(vol[0], seg, starts)
    with pytest.raises(ValueError, match="outside the volume"):
        _est().fit_arrays(vol, seg, [75])
    with pytest.raises(ValueError, match="context"):
        _est(context=0).fit_arrays(vol, seg, starts)
    with pytest.raises(NotFittedError, match="not fitted"):
        _est().predict_arrays(vol, [0])


def test_no_import_circle_between_distributed_and_the_estimator():
    """#19.6: distributed.py (process groups) must not import the estimator, which imports it."""
    import ast

    import workbench.forecast.video.distributed as dist_mod

    tree = ast.parse(open(dist_mod.__file__).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {"estimator", "distributed_fit"} & imported
    assert not hasattr(dist_mod, "fit_distributed")       # public home: workbench.forecast.video
