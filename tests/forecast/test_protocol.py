import numpy as np
import pytest

from workbench.forecast import protocol

REL = protocol.RELEASE_CONDITION_OFFSETS
ZAPBENCH_TEST_WINDOWS = [98, 323, 99, 368, 231, 86, 165, 99, 88]


@pytest.mark.parametrize("context", [1, 4, 256])
def test_release_test_window_counts_match_zapbench(context):
    w = protocol.windows(REL, "test", context=context)
    counts = [int((w["condition"] == c).sum()) for c in protocol.CONDITION_NAMES]
    assert counts == ZAPBENCH_TEST_WINDOWS
    assert w.sizes["window"] == 1557


@pytest.mark.parametrize("context", [4, 256])
def test_window_frames_respect_splits(context):
    off = REL
    for split in ("train", "val", "test"):
        w = protocol.windows(off, split, context=context)
        s = w["start"].values
        ci = w["condition_index"].values
        targets = s[:, None] + context + np.arange(protocol.HORIZON)
        cond, _, labels = protocol.frame_labels(off)
        # every target frame lies in the window's own split and condition
        assert np.all(labels[targets] == split)
        assert np.all(cond[targets] == np.asarray(protocol.CONDITION_NAMES)[ci][:, None])
        # context frames stay inside the condition (after trimming)
        lo = np.array([protocol.condition_bounds(off, i)[0] for i in ci])
        assert np.all(s >= lo)
        if split == "train":
            assert "taxis" not in set(w["condition"].values)


def test_heldout_context_and_bounds():
    lo, hi = protocol.condition_bounds(REL, 3)
    assert (lo, hi) == (3079, 3734)
    assert protocol.split_bounds(REL, 3, "test", 4, heldout=True) == (lo + 256 - 4, hi)
    w = protocol.windows(REL, "test", context=4, conditions=["taxis"])
    # first target frame is the first frame after the 256 context-only frames
    assert w["start"].values[0] + 4 == lo + 256
    _, _, split = protocol.frame_labels(REL)
    assert np.all(split[lo:lo + 256] == "context") and split[lo - 1] == "trim"


def test_split_sizes_70_10_20():
    lo, hi = protocol.condition_bounds(REL, 1)
    n = hi - lo
    tr = protocol.split_bounds(REL, 1, "train", 4)
    va = protocol.split_bounds(REL, 1, "val", 4)
    te = protocol.split_bounds(REL, 1, "test", 4)
    assert tr == (lo, lo + n - int(0.1 * n) - int(0.2 * n))
    assert va[0] == tr[1] - 4 and te[0] == va[1] - 4 and te[1] == hi


def test_gather_matches_slices():
    x = np.arange(200 * 3, dtype=float).reshape(200, 3)
    ctx, tgt = protocol.gather(x, [0, 10, 100], 4, 32)
    np.testing.assert_array_equal(ctx[1], x[10:14])
    np.testing.assert_array_equal(tgt[2], x[104:136])
    with pytest.raises(ValueError, match="outside"):
        protocol.gather(x, [190], 4, 32)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        protocol.windows(REL, "bogus")
    with pytest.raises(ValueError, match="context"):
        protocol.windows(REL, "test", context=300)
    with pytest.raises(ValueError, match="unknown conditions"):
        protocol.windows(REL, "test", conditions=["nope"])
    with pytest.raises(ValueError, match="offsets"):
        protocol.windows([5, 3])
