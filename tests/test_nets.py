"""core.orthogonal_init: gains measured from the weights of the policy as built."""

import math

import gymnasium as gym
import numpy as np
import torch

from proximal.carry import Carry
from proximal.nets import NatureCNN
from proximal.policy import make_policy

OBS = gym.spaces.Box(-1, 1, (4,), np.float32)
ACT = gym.spaces.Discrete(2)


def expected_gains(policy):
    """name of each Linear layer -> the reference's gain: sqrt(2) hidden, 0.01 policy head, 1 value head."""
    gains = {}
    for name, module in policy.named_modules():
        if isinstance(module, torch.nn.Linear):
            gains[name] = {"policy_head.linear": 0.01, "value_head": 1.0}.get(name, math.sqrt(2))
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
    head = policy.policy_head.linear.weight.detach()
    # PyTorch's default is uniform(+-1/sqrt(fan_in)): singular values spread out, biases non-zero
    assert torch.linalg.svdvals(head).max() > 0.1
    assert torch.count_nonzero(policy.policy_head.linear.bias) > 0


# ---------------------------------------------------------------- atari.nature_cnn, atari.scale_obs

IMAGES = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
ATARI_ACT = gym.spaces.Discrete(4)


def test_atari_nature_cnn_layer_shapes_and_gains():
    from proximal.actors import TorchActor
    from proximal.config import preset
    from proximal.fast_paths import make_actor, make_update
    from proximal.update import make_optimizer, ppo_update

    cfg = preset("atari")
    torch.manual_seed(0)
    policy = make_policy(IMAGES, ATARI_ACT, cfg)
    layers = [(name, m) for name, m in policy.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    shapes = {name: tuple(m.weight.shape) for name, m in layers}
    assert shapes == {"trunk.convs.0": (32, 4, 8, 8), "trunk.convs.2": (64, 32, 4, 4), "trunk.convs.4": (64, 64, 3, 3),
                      "trunk.fc.0": (512, 3136), "policy_head.linear": (4, 512), "value_head": (1, 512)}
    strides = [m.stride for _, m in layers if isinstance(m, torch.nn.Conv2d)]
    assert strides == [(4, 4), (2, 2), (1, 1)]
    relus = [m for m in policy.trunk.modules() if isinstance(m, torch.nn.ReLU)]
    assert len(relus) == 4, "ReLU after every conv and after the 512 layer"
    for name, layer in layers:
        gain = {"policy_head.linear": 0.01, "value_head": 1.0}.get(name, math.sqrt(2))
        # orthogonal init of a conv is that of its weight flattened to (out, in * kh * kw)
        singular = torch.linalg.svdvals(layer.weight.detach().flatten(1))
        np.testing.assert_allclose(singular.numpy(), gain, rtol=1e-4, err_msg=name)
        assert torch.count_nonzero(layer.bias) == 0, name
    # one shared trunk: both heads' gradients reach the same trunk parameters
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    logprob, entropy, value = policy.evaluate({"obs": obs, "actions": torch.zeros(3, dtype=torch.long)})
    grads = torch.autograd.grad(value.sum(), list(policy.trunk.parameters()))
    assert all(g.abs().sum() > 0 for g in grads)
    assert isinstance(policy.trunk, NatureCNN)
    # never the numpy fast paths (those are MLP-only)
    assert type(make_actor(policy, torch.device("cpu"))) is TorchActor
    assert make_update(policy, make_optimizer(policy, cfg), torch.device("cpu")) is ppo_update


def test_atari_nature_cnn_uint8_batch_gives_finite_outputs():
    from proximal.config import preset

    torch.manual_seed(0)
    policy = make_policy(IMAGES, ATARI_ACT, preset("atari"))
    obs = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    action, logprob, value, _ = policy.act(obs, Carry(None), np.random.default_rng(0))
    assert action.shape == (5,) and logprob.shape == (5,) and value.shape == (5,)
    assert torch.isfinite(logprob).all() and torch.isfinite(value).all()
    lp, entropy, v = policy.evaluate({"obs": obs, "actions": action})
    assert torch.isfinite(lp).all() and torch.isfinite(entropy).all()
    torch.testing.assert_close(lp, logprob)
    torch.testing.assert_close(v, value)


def check_scale_obs(cfg):
    torch.manual_seed(0)
    policy = make_policy(IMAGES, ATARI_ACT, cfg)
    first = policy.trunk.convs[0]
    seen = []
    first.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    obs = torch.full((2, 4, 84, 84), 255, dtype=torch.uint8)
    obs[1] = 51
    policy.value(obs)
    x = seen[0]
    assert x.dtype == torch.float32
    assert torch.all(x[0] == 1.0) and torch.allclose(x[1], torch.tensor(0.2)), "uint8 divided by 255"


def test_atari_scale_obs_divides_uint8_by_255():
    from proximal.config import preset

    check_scale_obs(preset("atari"))


def test_atari_scale_obs_off_feeds_raw_pixels(cfg):
    cfg.details["atari.scale_obs"] = False
    torch.manual_seed(0)
    policy = make_policy(IMAGES, ATARI_ACT, cfg)
    seen = []
    policy.trunk.convs[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    policy.value(torch.full((1, 4, 84, 84), 255, dtype=torch.uint8))
    assert torch.all(seen[0] == 255.0)
