import pytest

from workbench.forecast import generate


@pytest.fixture(scope="session")
def tiny():
    """The tiny synthetic recording, in memory (shared by the forecast tests)."""
    return generate("tiny", random_state=0)
