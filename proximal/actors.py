"""The rollout's view of a policy: numpy observations in, numpy (action, log-prob, value) out, and the policy's
``env_action`` (``policy.EnvAction``): the action the env receives for an action taken.

``TorchActor`` is the plain path through ``policy.act`` and works for every policy kind and device.
``NumpyMLPActor`` is the fast path for the MLP policy on the CPU, with discrete or Gaussian actions: for a batch
of a few observations, numpy's matmuls cost a fraction of torch's per-op dispatch, and the rollout spends most
of its time there. It reads the parameters through numpy views that share their memory, so it sees every
optimizer step without copying. Both draw sampling noise from the same numpy RNG, so they take the same actions;
a test checks that they agree.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .distributions import Categorical, DiagGaussian
from .policy import ActorCritic, RecurrentActorCritic


class TorchActor:
    def __init__(self, policy: ActorCritic, device: torch.device):
        self.policy, self.device = policy, device
        self.env_action = policy.env_action

    def _obs(self, obs: np.ndarray) -> torch.Tensor:
        if obs.dtype == np.uint8:  # images stay uint8: the network scales them (atari.scale_obs)
            return torch.as_tensor(obs, device=self.device)
        return torch.as_tensor(obs, dtype=torch.float32, device=self.device)

    def act(self, obs: np.ndarray, rng: np.random.Generator | None, mask: np.ndarray | None = None):
        """``mask``: the env's action masks of ``obs``, for a masked policy (aux.action_masking)."""
        if mask is not None:
            mask = torch.as_tensor(mask, device=self.device)
        action, logprob, value = self.policy.act(self._obs(obs), rng, mask)
        return action.cpu().numpy(), logprob.cpu().numpy(), value.cpu().numpy()

    def value(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.policy.value(self._obs(obs)).cpu().numpy()


class RecurrentActor(TorchActor):
    """The rollout's view of a ``RecurrentActorCritic``: the caller carries the (2, N, H) state, as a torch tensor
    on the policy's device, and passes each step's episode starts ((N,) numpy)."""

    def act(self, obs: np.ndarray, rng: np.random.Generator | None, state: torch.Tensor, start: np.ndarray):
        """(action, log-prob, value, the state after the step)."""
        action, logprob, value, state = self.policy.act(self._obs(obs), state, self._start(start), rng)
        return action.cpu().numpy(), logprob.cpu().numpy(), value.cpu().numpy(), state

    def value(self, obs: np.ndarray, state: torch.Tensor, start: np.ndarray | None = None) -> np.ndarray:
        """V(obs) after ``state`` (not advanced); ``start`` None: no env begins an episode."""
        start = None if start is None else self._start(start)
        return self.policy.value(self._obs(obs), state, start).cpu().numpy()

    def initial_state(self, num_envs: int) -> torch.Tensor:
        return self.policy.initial_state(num_envs)

    def _start(self, start: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(start, dtype=torch.float32, device=self.device)


def _numpy_layers(trunk: nn.Sequential):
    """(W^T, b) numpy views of each Linear layer of a tanh MLP trunk, in order."""
    assert all(isinstance(m, (nn.Linear, nn.Tanh)) for m in trunk)
    return [_numpy_linear(m) for m in trunk if isinstance(m, nn.Linear)]


def _numpy_linear(layer: nn.Linear):
    return layer.weight.detach().numpy().T, layer.bias.detach().numpy()


def _trunk(layers, x: np.ndarray) -> np.ndarray:
    for weight, bias in layers:
        x = np.tanh(x @ weight + bias)
    return x


def _linear(layer, x: np.ndarray) -> np.ndarray:
    weight, bias = layer
    return x @ weight + bias


_LOG_SQRT_2PI = np.float32(0.5 * np.log(2.0 * np.pi))


class NumpyMLPActor:
    """``ActorCritic.act``/``value`` in numpy, for Categorical, DiagGaussian and TanhDiagGaussian policies."""

    def __init__(self, policy: ActorCritic):
        self.actor_layers = _numpy_layers(policy.actor_trunk)
        self.critic_layers = _numpy_layers(policy.critic_trunk) if policy.critic_trunk is not None else None
        self.policy_head = _numpy_linear(policy.policy_head)
        self.value_head = _numpy_linear(policy.value_head)
        self.dist = policy.dist
        self.env_action = policy.env_action
        if policy.dist is not Categorical:
            # cont.state_independent_logstd: a view of the parameter vector, or the log-std head
            self.log_std = policy.log_std.detach().numpy() if policy.log_std is not None else None
            self.log_std_head = _numpy_linear(policy.log_std_head) if policy.log_std_head is not None else None
            self.log_half_range = getattr(policy.dist, "log_half_range", None)  # TanhDiagGaussian

    def act(self, obs: np.ndarray, rng: np.random.Generator | None):
        obs = obs.reshape(len(obs), -1)
        features = _trunk(self.actor_layers, obs)
        value_features = features if self.critic_layers is None else _trunk(self.critic_layers, obs)
        value = _linear(self.value_head, value_features)[:, 0]
        out = _linear(self.policy_head, features)
        if self.dist is Categorical:
            action, logprob = self._categorical(out, rng)
        else:
            log_std = self.log_std if self.log_std_head is None else _linear(self.log_std_head, features)
            action, logprob = self._gaussian(out, log_std, rng)
        return action, logprob.astype(np.float32), value

    @staticmethod
    def _categorical(logits: np.ndarray, rng: np.random.Generator | None):
        if rng is None:
            action = logits.argmax(-1)
        else:
            action = (logits + Categorical.noise(rng, logits.shape)).argmax(-1)
        top = logits.max(-1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(-1))
        return action, np.take_along_axis(logits, action[:, None], 1)[:, 0] - log_norm

    def _gaussian(self, mean: np.ndarray, log_std: np.ndarray, rng: np.random.Generator | None):
        # distributions.DiagGaussian: a = mean + std * noise; log-prob summed over dimensions (cont.independent_dims)
        if rng is None:
            action = mean
        else:
            action = mean + np.exp(log_std) * DiagGaussian.noise(rng, mean.shape)
        z = (action - mean) * np.exp(-log_std)
        logprob = (-0.5 * z * z - log_std - _LOG_SQRT_2PI).sum(-1)
        if self.log_half_range is not None:  # TanhDiagGaussian: minus log |da/du|
            log_det = 2.0 * (np.log(2.0) - action - np.logaddexp(0.0, -2.0 * action))
            logprob = logprob - log_det.sum(-1) - self.log_half_range
        return action, logprob

    def value(self, obs: np.ndarray) -> np.ndarray:
        obs = obs.reshape(len(obs), -1)
        trunk = self.actor_layers if self.critic_layers is None else self.critic_layers
        return _linear(self.value_head, _trunk(trunk, obs))[:, 0]


def make_actor(policy, device: torch.device, fast: bool = True):
    """The numpy fast path where it applies (CPU, the MLP ``ActorCritic`` with Discrete or Box actions, no action
    masks), else the torch path; ``RecurrentActor`` for recurrent policies."""
    if isinstance(policy, RecurrentActorCritic):
        return RecurrentActor(policy, device)
    numpy_supported = type(policy) is ActorCritic and not policy.masked and (policy.dist is Categorical
                                                                             or policy.continuous)
    if fast and device.type == "cpu" and numpy_supported:
        return NumpyMLPActor(policy)
    return TorchActor(policy, device)
