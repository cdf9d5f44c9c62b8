import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: intra-op threading on a shared 2-core machine only adds contention
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
