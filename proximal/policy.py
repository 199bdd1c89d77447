"""The policy: one ``ActorCritic`` for every kind, composed of a trunk, an optional recurrent core and two heads.

- The trunk (``nets``) maps observations to the policy head's and the value head's features: MLPs (separate or one
  shared, core.separate_networks / cont.separate_networks), the Nature CNN (atari.nature_cnn), the grid CNN
  (one row of features per cell), or the observation itself for the reference's ``lstm`` network.
- The core (``nets.LSTMCore``, the lstm.* details), where there is one, turns the trunk's features into the
  features of both heads, carrying its state from step to step.
- The policy head gives the parameters of the action distribution (``distributions``, one class per kind of
  action space); the value head (gain 1) the value.

Every kind has the same two paths. ``act(obs, carry, rng)`` is the rollout path (sampling, no gradient):
(action, its log-prob, value, the carry after the step). ``evaluate(batch)`` is the training path: (log-prob of
the stored actions, entropy, value). The ratio-is-one test checks that the two agree on the stored log-probs.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from .carry import Carry
from .config import Config
from .distributions import Distribution, make_distribution
from .errors import UserError
from .nets import FlatTrunk, GridCNN, LSTMCore, MLPTrunk, NatureCNN, layer_init
from .spaces import is_grid_space, is_image_space

SUPPORTED = ("observations: Box (any shape, flattened), or uint8 images (C, H, W) with Discrete "
             "actions for the Nature CNN, or grids (H, W, C) with MultiDiscrete actions of shape (H * W, c) for "
             "the grid CNN; actions: Discrete, MultiDiscrete, or Box with a float dtype (any bounds)")


def separate_networks_id(action_space: gym.Space) -> str:
    """The detail that decides separate vs shared trunks: the reference shares one trunk for discrete actions
    (core.separate_networks, which the classic preset switches on like CleanRL) and uses separate networks on
    MuJoCo (cont.separate_networks, ``value_network='copy'``). So ``--off cont.separate_networks`` changes only
    Box-action runs and ``--off core.separate_networks`` only discrete ones."""
    return "cont.separate_networks" if isinstance(action_space, gym.spaces.Box) else "core.separate_networks"


class ActorCritic(nn.Module):
    """A trunk, an optional core and the heads (see the module docstring). ``masked``: the policy takes the env's
    action masks in the carry (aux.action_masking) and pushes the logits of invalid actions down by 1e8
    (``distributions.masked_logits``)."""

    def __init__(self, trunk: nn.Module, dist: Distribution, cfg: Config, core: LSTMCore | None = None,
                 masked: bool = False):
        super().__init__()
        self.trunk, self.core, self.dist, self.masked = trunk, core, dist, masked
        width = trunk.width if core is None else core.hidden_size
        value_width = trunk.value_width if core is None else core.hidden_size
        self.policy_head = dist.head(width, trunk.rows if core is None else 1, cfg)
        self.value_head = layer_init(nn.Linear(value_width, 1), 1.0, cfg.on("core.orthogonal_init"))

    def initial_state(self, num_envs: int) -> torch.Tensor | None:
        """lstm.zero_state: the core's state before the first step; None without a core."""
        return None if self.core is None else self.core.initial_state(num_envs)

    def _features(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The trunk's features for the policy head and for the value head (the same tensor where it is shared)."""
        out = self.trunk(obs)
        return out if isinstance(out, tuple) else (out, out)

    def _params(self, features: torch.Tensor, mask: torch.Tensor | None):
        """The distribution's parameters from the policy head, masked where the policy takes masks."""
        params = _float(self.policy_head(features))
        if self.masked:
            if mask is None:
                raise ValueError("this policy was built for action masks (masked=True): pass the env's mask")
            params = self.dist.masked(params, mask)
        return params

    def _step(self, obs: torch.Tensor, carry: Carry):
        """(the policy head's features, the value, the state after the step) for one step of N envs."""
        features, value_features = self._features(obs)
        state = carry.state
        if self.core is not None:
            features, state = self.core.step(features, state, carry.start)
            value_features = features
        return features, self.value_head(value_features).squeeze(-1).float(), state

    def distribution(self, obs: torch.Tensor, carry: Carry):
        """(the action distribution's parameters, the value, the carry after the step) for one step of N envs."""
        features, value, state = self._step(obs, carry)
        return self._params(features, carry.mask), value, Carry(carry.start, carry.mask, state)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, carry: Carry, rng: np.random.Generator | None):
        """Rollout path: (action, its log-prob, value, the carry after the step). ``rng`` None takes the most likely
        action (the mean for Box actions)."""
        params, value, carry = self.distribution(obs, carry)
        if rng is None:
            action = self.dist.mode(params)
        else:
            noise = self.dist.noise(rng, self.dist.noise_shape(params))
            action = self.dist.sample(params, torch.from_numpy(noise).to(value.device))
        return action, self.dist.log_prob(params, action), value, carry

    def value(self, obs: torch.Tensor, carry: Carry | None = None) -> torch.Tensor:
        """V(obs) after ``carry`` (whose state is not advanced); a policy without a core needs no carry, and the
        value needs no action mask."""
        return self._step(obs, Carry(None) if carry is None else carry)[1]

    def evaluate(self, batch: dict[str, torch.Tensor]):
        """Training path: (log-prob of ``batch["actions"]``, entropy, value) per row of ``batch["obs"]``; a masked
        policy reads the stored ``masks``. With a core, the rows are T steps of k envs, t-major (row t * k + env),
        with their episode ``starts`` and ``state`` (2, k, H), the envs' state before their first step, from which
        the core replays the sequences."""
        features, value_features = self._features(batch["obs"])
        if self.core is not None:
            state = batch["state"]
            k = state.shape[1]
            out = self.core.replay(features.view(-1, k, features.shape[-1]), batch["starts"].view(-1, k), state)
            features = value_features = out.reshape(len(features), -1)
        params = self._params(features, batch.get("masks"))
        value = self.value_head(value_features).squeeze(-1).float()
        return (*self.dist.log_prob_and_entropy(params, batch["actions"]), value)


def _float(params):
    """The policy head's output in float32: under bf16 autocast (``precision``) the distributions' arithmetic and
    the log-probs stored for the ratio stay fp32; a no-op in fp32."""
    return tuple(p.float() for p in params) if isinstance(params, tuple) else params.float()


def make_trunk(observation_space: gym.Space, action_space: gym.Space, cfg: Config, recurrent: bool) -> nn.Module:
    """The trunk for these spaces. Images with Discrete actions: the Nature CNN (atari.nature_cnn), uint8 as stored
    (divided by 255 inside with atari.scale_obs). Grids with one action group per cell: the grid CNN. Else MLPs on
    the flattened observation (uint8 as float32, unscaled: ``nets.flat_observations``), separate or shared as
    ``separate_networks_id`` says; before a core, the flattened observation itself (the reference's ``lstm``), or
    the hidden_sizes MLP with ``cfg.lstm_mlp``."""
    ortho = cfg.on("core.orthogonal_init")
    shape = tuple(observation_space.shape)
    if is_image_space(observation_space) and isinstance(action_space, gym.spaces.Discrete):
        return NatureCNN(shape, ortho, scale=cfg.on("atari.scale_obs"))
    if is_grid_space(observation_space, action_space) and not recurrent:
        return GridCNN(shape, ortho)
    if not recurrent:
        return MLPTrunk(math.prod(shape), cfg.hidden_sizes, ortho, cfg.on(separate_networks_id(action_space)))
    return FlatTrunk(math.prod(shape), cfg.hidden_sizes if cfg.lstm_mlp else (), ortho)


def make_policy(observation_space: gym.Space, action_space: gym.Space, cfg: Config,
                masked: bool = False) -> ActorCritic:
    """The policy for these spaces; ``masked``: it takes the env's action masks (aux.action_masking), which only
    Discrete and MultiDiscrete actions have. A recurrent core where ``cfg.lstm_size`` is set: the trunk's
    features go through an LSTM to both heads, as in the reference's recurrent networks (its
    ``value_network='copy'`` does not apply to them)."""
    if not isinstance(observation_space, gym.spaces.Box):
        raise UserError(f"observation space {observation_space} is not supported yet; supported: {SUPPORTED}")
    dist = make_distribution(action_space, cfg)
    if masked:
        if not dist.maskable:
            raise UserError(f"action masks are supported for Discrete and MultiDiscrete actions, not {action_space}; "
                            "train with --off aux.action_masking")
        if cfg.lstm_size:
            raise UserError("action masks with an LSTM policy are not supported yet; train without the LSTM or "
                            "with --off aux.action_masking")
    recurrent = cfg.lstm_size > 0
    trunk = make_trunk(observation_space, action_space, cfg, recurrent)
    core = LSTMCore(trunk.width, cfg.lstm_size, cfg.on("lstm.init"), cfg.on("lstm.reset_on_done")) if recurrent else None
    return ActorCritic(trunk, dist, cfg, core, masked)
