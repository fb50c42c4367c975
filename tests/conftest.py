"""Shared pytest fixtures."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for modules of tiny convolutions: on a loaded 2-core machine, OpenMP
    spin-waiting across threads made them up to 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
