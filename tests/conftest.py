"""Suite-wide settings.

Under pytest-xdist each worker gets one intra-op thread: the suite runs two workers on two cores,
and small tensor ops are faster single-threaded than with OpenMP threads competing for cores.
"""

import os

import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
