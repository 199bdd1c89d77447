"""The rollout's view of a policy: numpy observations in, numpy (action, log-prob, value) out.

``TorchActor`` is the plain path through ``policy.act`` and works for every policy kind and device.
``NumpyMLPActor`` is the fast path for an MLP policy with discrete actions on the CPU: for a batch of a few
observations, numpy's matmuls cost a fraction of torch's per-op dispatch, and the rollout spends most of its
time there. It reads the parameters through numpy views that share their memory, so it sees every optimizer
step without copying. Both draw sampling noise from the same numpy RNG, so they take the same actions; a test
checks that they agree.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .distributions import Categorical
from .policy import ActorCritic


class TorchActor:
    def __init__(self, policy: ActorCritic, device: torch.device):
        self.policy, self.device = policy, device

    def _obs(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(obs, dtype=torch.float32, device=self.device)

    def act(self, obs: np.ndarray, rng: np.random.Generator | None):
        action, logprob, value = self.policy.act(self._obs(obs), rng)
        return action.cpu().numpy(), logprob.cpu().numpy(), value.cpu().numpy()

    def value(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.policy.value(self._obs(obs)).cpu().numpy()


def _numpy_layers(trunk: nn.Sequential, head: nn.Linear):
    """(W^T, b) numpy views of each Linear layer, in order; every layer but the head is followed by tanh."""
    linears = [m for m in trunk if isinstance(m, nn.Linear)] + [head]
    assert all(isinstance(m, (nn.Linear, nn.Tanh)) for m in trunk)
    return [(m.weight.detach().numpy().T, m.bias.detach().numpy()) for m in linears]


def _forward(layers, x: np.ndarray) -> np.ndarray:
    for weight, bias in layers[:-1]:
        x = np.tanh(x @ weight + bias)
    weight, bias = layers[-1]
    return x @ weight + bias


class NumpyMLPActor:
    def __init__(self, policy: ActorCritic):
        self.policy_layers = _numpy_layers(policy.actor_trunk, policy.policy_head)
        critic_trunk = policy.critic_trunk if policy.critic_trunk is not None else policy.actor_trunk
        self.value_layers = _numpy_layers(critic_trunk, policy.value_head)

    def act(self, obs: np.ndarray, rng: np.random.Generator | None):
        obs = obs.reshape(len(obs), -1)
        logits = _forward(self.policy_layers, obs)
        value = _forward(self.value_layers, obs)[:, 0]
        if rng is None:
            action = logits.argmax(-1)
        else:
            action = (logits + Categorical.noise(rng, logits.shape)).argmax(-1)
        top = logits.max(-1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(-1))
        logprob = np.take_along_axis(logits, action[:, None], 1)[:, 0] - log_norm
        return action, logprob.astype(np.float32), value

    def value(self, obs: np.ndarray) -> np.ndarray:
        return _forward(self.value_layers, obs.reshape(len(obs), -1))[:, 0]


def make_actor(policy, device: torch.device, fast: bool = True):
    """The numpy fast path where it applies (CPU, MLP, discrete actions), else the torch path."""
    if fast and device.type == "cpu" and isinstance(policy, ActorCritic) and policy.dist is Categorical:
        return NumpyMLPActor(policy)
    return TorchActor(policy, device)
