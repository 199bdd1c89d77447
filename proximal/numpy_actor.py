"""The rollout's fast path for MLP policies on the CPU: ``ActorCritic.act``/``value`` in numpy.

For a batch of a few observations, numpy's matmuls cost a fraction of torch's per-op dispatch, and the rollout
spends most of its time there. The actor reads the parameters through numpy views that share their memory, so it
sees every optimizer step without copying. It draws sampling noise from the same numpy RNG as ``TorchActor``, so
the two take the same actions; tests check that they agree. ``fast_paths`` decides where it runs.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from .carry import Carry
from .distributions import Categorical, TanhDiagGaussian
from .numpy_ops import gaussian_log_prob, linear_layers, matmul, tanh_mlp
from .policy import ActorCritic


def _views(layer: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    return layer.weight.detach().numpy(), layer.bias.detach().numpy()


def _linear(layer, x: np.ndarray, bf16: bool) -> np.ndarray:
    weight, bias = layer
    return matmul(x, weight.T, bias, bf16)


class NumpyMLPActor:
    """For Categorical, DiagGaussian and TanhDiagGaussian heads on ``nets.MLPTrunk``, no core, no masks.
    ``bf16``: the networks' matmuls in emulated bf16 (``precision``), as ``numpy_update.NumpyMLPUpdate``'s."""

    def __init__(self, policy: ActorCritic, bf16: bool = False):
        self.bf16 = bf16
        trunk, head = policy.trunk, policy.policy_head
        self.actor_layers = [_views(m) for m in linear_layers(trunk.actor)]
        self.critic_layers = None if trunk.critic is None else [_views(m) for m in linear_layers(trunk.critic)]
        self.value_head = _views(policy.value_head)
        self.dist = policy.dist
        self.env_action = policy.dist.to_env
        self.categorical = isinstance(policy.dist, Categorical)
        if self.categorical:
            self.policy_head = _views(head.linear)
        else:
            self.policy_head = _views(head.mean)
            # cont.state_independent_logstd: a view of the parameter vector, or the log-std head
            self.log_std = head.log_std.detach().numpy() if head.log_std is not None else None
            self.log_std_head = _views(head.log_std_head) if head.log_std_head is not None else None
            squashed = isinstance(policy.dist, TanhDiagGaussian)
            self.log_half_range = policy.dist.log_half_range if squashed else None

    def act(self, obs: np.ndarray, carry: Carry, rng: np.random.Generator | None):
        obs = obs.reshape(len(obs), -1)
        features = tanh_mlp(self.actor_layers, obs, self.bf16)[-1]
        value_features = features if self.critic_layers is None else tanh_mlp(self.critic_layers, obs, self.bf16)[-1]
        value = _linear(self.value_head, value_features, self.bf16)[:, 0]
        out = _linear(self.policy_head, features, self.bf16)
        if self.categorical:
            action, logprob = self._categorical(out, rng)
        else:
            log_std = self.log_std if self.log_std_head is None else _linear(self.log_std_head, features, self.bf16)
            action, logprob = self._gaussian(out, log_std, rng)
        return action, logprob.astype(np.float32), value, carry

    def _categorical(self, logits: np.ndarray, rng: np.random.Generator | None):
        if rng is None:
            action = logits.argmax(-1)
        else:
            action = (logits + self.dist.noise(rng, logits.shape)).argmax(-1)
        top = logits.max(-1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(-1))
        return action, np.take_along_axis(logits, action[:, None], 1)[:, 0] - log_norm

    def _gaussian(self, mean: np.ndarray, log_std: np.ndarray, rng: np.random.Generator | None):
        # distributions.DiagGaussian: a = mean + std * noise
        if rng is None:
            action = mean
        else:
            action = mean + np.exp(log_std) * self.dist.noise(rng, mean.shape)
        logprob, _ = gaussian_log_prob(mean, log_std, action)
        if self.log_half_range is not None:  # TanhDiagGaussian: minus log |da/du|
            log_det = 2.0 * (np.log(2.0) - action - np.logaddexp(0.0, -2.0 * action))
            logprob = logprob - log_det.sum(-1) - self.log_half_range
        return action, logprob

    def value(self, obs: np.ndarray, carry: Carry) -> np.ndarray:
        obs = obs.reshape(len(obs), -1)
        layers = self.actor_layers if self.critic_layers is None else self.critic_layers
        return _linear(self.value_head, tanh_mlp(layers, obs, self.bf16)[-1], self.bf16)[:, 0]
