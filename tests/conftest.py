import pytest
import torch

import envs as test_envs
from proximal.config import preset

test_envs.register()
torch.set_num_threads(1)


@pytest.fixture
def cfg():
    """The classic preset, fresh for each test."""
    return preset("classic")
