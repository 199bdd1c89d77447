"""The rollout's fast path for MLP policies on the CPU: ``ActorCritic.act``/``value`` in numpy, as ``sample`` (each
step's action) and ``score`` (a whole rollout's log-probs and values at once).

For a batch of a few observations, numpy's matmuls cost a fraction of torch's per-op dispatch, and the rollout
spends most of its time there. The actor reads the parameters through numpy views that share their memory, so it
sees every optimizer step without copying. It draws sampling noise from the same numpy RNG as ``TorchActor``, so
the two take the same actions; tests check that they agree. ``fast_paths`` decides where it runs.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
from torch import nn

from .carry import Carry
from .distributions import Categorical, TanhDiagGaussian
from .numpy_ops import gaussian_log_prob, linear_layers, log_softmax, matmul, taken_index, tanh_mlp
from .policy import ActorCritic


def _views(layer: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    """(weight transposed, bias) of a Linear, as views of its parameters (``numpy_ops.tanh_mlp``'s layers)."""
    return layer.weight.detach().numpy().T, layer.bias.detach().numpy()


def _rows(obs: np.ndarray) -> np.ndarray:
    """Observations as float32 rows, as ``nets.flat_observations`` takes them: uint8 cast, unscaled. Float32 rows
    pass as they are (a dtype test costs a fifth of ``astype(copy=False)``, every rollout step)."""
    if obs.ndim != 2:
        obs = obs.reshape(len(obs), -1)
    return obs if obs.dtype == np.float32 else obs.astype(np.float32)


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
        self.noise_size = self.policy_head[0].shape[1]  # a noise value per logit, or per action dimension
        self._noise_rng = self._noise = None  # the rollout's noise, drawn at once (``rollout``)

    # The rollout calls ``sample`` every step and ``score`` once on the whole rollout: a log-prob and a value per
    # step would more than double the per-step numpy calls, and the policy does not change during a rollout.
    scores_later = True

    @contextmanager
    def rollout(self, rng: np.random.Generator | None = None, num_steps: int = 0, num_envs: int = 0):
        """The context of a whole rollout, whose ``sample`` calls take ``num_envs`` actions ``num_steps`` times from
        ``rng``: their sampling noise is drawn at once, the same numbers in the same order as a draw a step
        (``TorchActor``'s). One numpy call instead of one a step: between two env steps, every call costs more
        than the draw itself."""
        if rng is not None:
            self._noise_rng = rng
            self._noise = iter(self.dist.noise(rng, (num_steps, num_envs, self.noise_size)))
        try:
            yield
        finally:
            self._noise_rng = self._noise = None

    def sample(self, obs: np.ndarray, carry: Carry, rng: np.random.Generator | None):
        """(action, carry): ``TorchActor.act``'s action from the same noise (the mode where ``rng`` is None); the
        carry passes through."""
        head = self._head(_rows(obs))
        if rng is None:
            return (head.argmax(-1) if self.categorical else head[0]), carry
        noise = next(self._noise) if rng is self._noise_rng else self.dist.noise(rng, (len(obs), self.noise_size))
        if self.categorical:  # Gumbel-max, as distributions.Categorical
            head += noise
            return head.argmax(-1), carry
        mean, log_std = head  # distributions.DiagGaussian: a = mean + std * noise
        return mean + np.exp(log_std) * noise, carry

    def score(self, obs: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log pi(actions | obs), V(obs)) for a batch of observations and the actions taken there."""
        obs = _rows(obs)
        return self._log_prob(self._head(obs), actions), self.value(obs, None)

    def _head(self, obs: np.ndarray):
        """The distribution's parameters: logits, or (mean, log std)."""
        features = tanh_mlp(self.actor_layers, obs, self.bf16)[-1]
        out = matmul(features, *self.policy_head, self.bf16)
        if self.categorical:
            return out
        return out, self.log_std if self.log_std_head is None else matmul(features, *self.log_std_head, self.bf16)

    def _log_prob(self, head, action: np.ndarray) -> np.ndarray:
        if self.categorical:  # numpy_update's formula: the first minibatch recomputes these log-probs
            logp = log_softmax(head)
            return logp.ravel()[taken_index(logp, action)]
        mean, log_std = head
        logprob, _ = gaussian_log_prob(mean, log_std, action)
        if self.log_half_range is not None:  # TanhDiagGaussian: minus log |da/du|
            log_det = 2.0 * (np.log(2.0) - action - np.logaddexp(0.0, -2.0 * action))
            logprob = logprob - log_det.sum(-1) - self.log_half_range
        return logprob.astype(np.float32)

    def value(self, obs: np.ndarray, carry: Carry) -> np.ndarray:
        obs = _rows(obs)
        layers = self.actor_layers if self.critic_layers is None else self.critic_layers
        return matmul(tanh_mlp(layers, obs, self.bf16)[-1], *self.value_head, self.bf16)[:, 0]
