import warnings

import pytest
import torch


@pytest.fixture(autouse=True)
def _float64_seed():
    # one intra-op thread: on the shared 2-core machine OpenMP spin-waiting makes small ops
    # (the bulk of these tests) 100x slower; restored after each test
    old, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        torch.set_default_dtype(old)
        torch.set_num_threads(threads)
