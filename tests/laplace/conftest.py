import warnings

import pytest
import torch


@pytest.fixture(autouse=True)
def _float64_seed():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
    torch.set_default_dtype(old)
