"""core.orthogonal_init: gains measured from the weights of the policy as built."""

import math

import gymnasium as gym
import numpy as np
import torch

from proximal.policy import make_policy

OBS = gym.spaces.Box(-1, 1, (4,), np.float32)
ACT = gym.spaces.Discrete(2)


def expected_gains(policy):
    """name of each Linear layer -> the reference's gain: sqrt(2) hidden, 0.01 policy head, 1 value head."""
    gains = {}
    for name, module in policy.named_modules():
        if isinstance(module, torch.nn.Linear):
            gains[name] = {"policy_head": 0.01, "value_head": 1.0}.get(name, math.sqrt(2))
    return gains


def check_orthogonal_init(cfg):
    torch.manual_seed(0)
    policy = make_policy(OBS, ACT, cfg)
    gains = expected_gains(policy)
    assert len(gains) == 6  # two hidden layers in each trunk, two heads
    for name, gain in gains.items():
        layer = policy.get_submodule(name)
        # an orthogonal matrix scaled by g has every singular value equal to g
        singular = torch.linalg.svdvals(layer.weight.detach())
        np.testing.assert_allclose(singular.numpy(), gain, rtol=1e-4, err_msg=name)
        assert torch.count_nonzero(layer.bias) == 0, name


def test_core_orthogonal_init_gains(cfg):
    check_orthogonal_init(cfg)


def test_core_orthogonal_init_off_keeps_pytorch_default(cfg):
    cfg.details["core.orthogonal_init"] = False
    torch.manual_seed(0)
    policy = make_policy(OBS, ACT, cfg)
    head = policy.policy_head.weight.detach()
    # PyTorch's default is uniform(+-1/sqrt(fan_in)): singular values spread out, biases non-zero
    assert torch.linalg.svdvals(head).max() > 0.1
    assert torch.count_nonzero(policy.policy_head.bias) > 0
