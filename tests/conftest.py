"""Suite-wide test settings."""

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def torch_threads():
    """One intra-op thread by default: tiny models gain nothing from more, and on a 2-core machine a second
    thread mostly waits. STEPCACHE_TEST_THREADS=2 runs the suite with two, whose kernels split sums differently."""
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("STEPCACHE_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(threads)
