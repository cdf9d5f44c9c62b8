import pytest

from workbench.forecast import make_dataset


@pytest.fixture(scope="session")
def tiny():
    """The tiny synthetic recording, in memory (shared by the forecast tests)."""
    return make_dataset("tiny", random_state=0)
