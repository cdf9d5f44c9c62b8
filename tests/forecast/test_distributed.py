import numpy as np
import pytest

from workbench.forecast import open_dataset, save_dataset
from workbench.forecast.baselines import MeanBaseline
from workbench.forecast.evaluate import score_forecaster

distributed = pytest.importorskip("distributed")


def test_lazy_store_on_local_cluster(tiny, tmp_path):
    path = save_dataset(tiny, tmp_path / "t.zarr")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        ds = open_dataset(path)
        assert ds["volume"].data.npartitions > 1
        # a bulk reduction runs as tasks on the cluster
        fut = client.compute(ds["volume"].mean("time").data)
        np.testing.assert_allclose(fut.result(), tiny["volume"].values.mean(0), rtol=1e-5, atol=1e-6)
        # scoring streams the store block by block through the same scheduler
        e, _ = score_forecaster(MeanBaseline(4).fit(ds), ds, block_frames=700)
        ref, _ = score_forecaster(MeanBaseline(4).fit(tiny), tiny)
        np.testing.assert_allclose(e["abs_err"].values, ref["abs_err"].values, rtol=1e-6)
