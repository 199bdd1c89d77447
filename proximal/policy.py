"""Policy kinds: a trunk (or two), a policy head that parameterizes an action distribution, and a value head.

``act`` is the rollout path (sampling, no gradient); ``evaluate`` is the training path. The ratio-is-one test
checks that they agree on the log-probabilities of stored actions.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from .config import Config
from .distributions import Categorical
from .errors import UserError
from .nets import layer_init, mlp


class ActorCritic(nn.Module):
    """MLP actor-critic for flat observations and discrete actions.

    core.separate_networks on: separate 64-64 tanh trunks for actor and critic (CleanRL, the blog);
    off: the reference's single shared trunk under both heads.
    """

    def __init__(self, obs_size: int, num_actions: int, cfg: Config):
        super().__init__()
        ortho = cfg.on("core.orthogonal_init")
        self.actor_trunk = mlp(obs_size, cfg.hidden_sizes, ortho)
        # shared trunk: the critic reads the actor's features
        self.critic_trunk = mlp(obs_size, cfg.hidden_sizes, ortho) if cfg.on("core.separate_networks") else None
        width = cfg.hidden_sizes[-1]
        self.policy_head = layer_init(nn.Linear(width, num_actions), 0.01, ortho)
        self.value_head = layer_init(nn.Linear(width, 1), 1.0, ortho)
        self.dist = Categorical

    def _heads(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obs = obs.flatten(1)
        features = self.actor_trunk(obs)
        value_features = features if self.critic_trunk is None else self.critic_trunk(obs)
        return self.policy_head(features), self.value_head(value_features).squeeze(-1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.flatten(1)
        if self.critic_trunk is None:
            return self.value_head(self.actor_trunk(obs)).squeeze(-1)
        return self.value_head(self.critic_trunk(obs)).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, rng: np.random.Generator | None):
        """Rollout path: (action, log-prob of that action, value). ``rng`` None takes the most likely action."""
        logits, value = self._heads(obs)
        if rng is None:
            action = self.dist.mode(logits)
        else:
            noise = torch.from_numpy(self.dist.noise(rng, tuple(logits.shape))).to(logits.device)
            action = self.dist.sample(logits, noise)
        return action, self.dist.log_prob(logits, action), value

    def evaluate(self, obs: torch.Tensor, actions: torch.Tensor):
        """Training path: (log-prob of ``actions``, entropy, value)."""
        logits, value = self._heads(obs)
        return self.dist.log_prob(logits, actions), self.dist.entropy(logits), value


def make_policy(observation_space: gym.Space, action_space: gym.Space, cfg: Config) -> ActorCritic:
    if not isinstance(observation_space, gym.spaces.Box):
        raise UserError(f"observation space {observation_space} is not supported yet: proximal needs a Box")
    if not isinstance(action_space, gym.spaces.Discrete):
        raise UserError(f"action space {action_space} is not supported yet: the classic preset needs Discrete actions")
    return ActorCritic(int(np.prod(observation_space.shape)), int(action_space.n), cfg)
