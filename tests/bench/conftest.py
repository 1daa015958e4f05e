import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """On the shared 2-core machine a second torch thread mostly waits for a core: one is faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
