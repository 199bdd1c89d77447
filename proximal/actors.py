"""The rollout's view of a policy: numpy observations and carry in, numpy actions and the carry after the step out.
Every actor has ``sample`` (the action alone: what evaluation and ``proximal.load`` need), ``value`` and
``env_action``, the action the env receives for an action taken (the distribution's ``to_env``). For the rollout's
log-probs and values, an actor either gives them every step (``act``) or scores the whole rollout at its end
(``score``, where ``scores_later``).

``TorchActor`` is the plain path through ``policy.act`` and works for every policy kind and device.
``numpy_actor.NumpyMLPActor`` is the fast path for MLP policies on the CPU; ``fast_paths.make_actor`` chooses.
"""

from __future__ import annotations

import numpy as np
import torch

from .carry import Carry
from .policy import ActorCritic
from .precision import autocast


class TorchActor:
    scores_later = False  # act gives every step its log-prob and value (numpy_actor scores a rollout at once)

    def __init__(self, policy: ActorCritic, device: torch.device, precision: str = "fp32"):
        self.policy, self.device, self.precision = policy, device, precision
        self.env_action = policy.dist.to_env
        self._starts = policy.core is not None  # only a core reads the episode starts

    def rollout(self, rng: np.random.Generator | None = None, num_steps: int = 0, num_envs: int = 0):
        """The context of a whole rollout (``num_steps`` calls taking ``num_envs`` actions from ``rng``: this actor
        draws their noise a step at a time). In bf16, autocast's casts of the weights to bf16 are cached for as
        long as the outermost autocast context lasts: one around the rollout, whose policy does not change, casts
        them once instead of at every step (a third of a Nature CNN's step on 8 frames). Never around an update."""
        return autocast(self.precision, self.device)

    def _obs(self, obs: np.ndarray) -> torch.Tensor:
        # uint8 stays uint8, as the rollout stores it: the trunk casts it (the Nature CNN also scales it,
        # atari.scale_obs; flat trunks take it unscaled, nets.flat_observations)
        if obs.dtype == np.uint8:
            return torch.as_tensor(obs, device=self.device)
        return torch.as_tensor(obs, dtype=torch.float32, device=self.device)

    def _carry(self, carry: Carry) -> Carry:
        start = torch.as_tensor(carry.start, dtype=torch.float32, device=self.device) if self._starts else None
        mask = None if carry.mask is None else torch.as_tensor(carry.mask, device=self.device)
        return Carry(start, mask, carry.state)

    def act(self, obs: np.ndarray, carry: Carry, rng: np.random.Generator | None):
        """(action, log-prob, value, the carry after the step); ``rng`` None takes the most likely action."""
        with autocast(self.precision, self.device):
            action, logprob, value, after = self.policy.act(self._obs(obs), self._carry(carry), rng)
        return action.cpu().numpy(), logprob.cpu().numpy(), value.cpu().numpy(), Carry(carry.start, carry.mask, after.state)

    def sample(self, obs: np.ndarray, carry: Carry, rng: np.random.Generator | None):
        """(action, the carry after the step): ``act`` without its log-prob and value."""
        action, _, _, after = self.act(obs, carry, rng)
        return action, after

    def value(self, obs: np.ndarray, carry: Carry) -> np.ndarray:
        """V(obs) after ``carry``, which is not advanced."""
        with torch.no_grad(), autocast(self.precision, self.device):
            return self.policy.value(self._obs(obs), self._carry(carry)).cpu().numpy()
