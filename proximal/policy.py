"""Policy kinds: a trunk (or two), a policy head that parameterizes an action distribution, and a value head.

``act`` is the rollout path (sampling, no gradient); ``evaluate`` is the training path. The ratio-is-one test
checks that they agree on the log-probabilities of stored actions. ``EnvAction`` turns the action the policy
sampled (what the rollout stores and trains on) into the action the env receives.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from .config import Config
from .distributions import Categorical, DiagGaussian, MultiCategorical, TanhDiagGaussian, masked_logits
from .errors import UserError
from .nets import GridCNN, LSTMCore, NatureCNN, layer_init, mlp
from .spaces import action_mask_size, is_grid_space, is_image_space

SUPPORTED = ("observations: Box (any shape, flattened), or uint8 images (C, H, W) with Discrete "
             "actions for the Nature CNN, or grids (H, W, C) with MultiDiscrete actions of shape (H * W, c) for "
             "the grid CNN; actions: Discrete, MultiDiscrete, or Box with a float dtype (any bounds)")




def categorical_head(action_space: gym.Space, width: int, orthogonal: bool):
    """(policy head, distribution) for Discrete and MultiDiscrete actions: a Linear of n logits or of sum(nvec)
    (multidiscrete.independent_categoricals), gain 0.01."""
    dist = MultiCategorical(action_space.nvec) if isinstance(action_space, gym.spaces.MultiDiscrete) else Categorical
    return layer_init(nn.Linear(width, action_mask_size(action_space)), 0.01, orthogonal), dist


def separate_networks_id(action_space: gym.Space) -> str:
    """The detail that decides separate vs shared trunks: the reference shares one trunk for discrete actions
    (core.separate_networks, which the classic preset switches on like CleanRL) and uses separate networks on
    MuJoCo (cont.separate_networks, ``value_network='copy'``). So ``--off cont.separate_networks`` changes only
    Box-action runs and ``--off core.separate_networks`` only discrete ones."""
    return "cont.separate_networks" if isinstance(action_space, gym.spaces.Box) else "core.separate_networks"


class ActorCritic(nn.Module):
    """MLP actor-critic for flat observations, with Discrete or Box actions.

    Separate 64-64 tanh trunks for actor and critic, or the reference's single shared trunk under both heads,
    as ``separate_networks_id(action_space)`` says: core.separate_networks for discrete actions,
    cont.separate_networks for Box actions.

    Discrete: ``policy_head`` gives the logits of a ``Categorical`` (gain 0.01). MultiDiscrete
    (multidiscrete.independent_categoricals): the head gives sum(nvec) logits, one ``Categorical`` per component.
    ``masked`` (aux.action_masking, where the env provides masks): ``act`` and ``evaluate`` take the env's action
    mask with each observation, and the logits of invalid actions are pushed down by 1e8
    (``distributions.masked_logits``).
    Box (cont.gaussian): ``policy_head`` gives the mean of a ``DiagGaussian`` (gain 0.01). Its log std is
    - cont.state_independent_logstd on (the reference): ``log_std``, a learned vector with one entry per action
      dimension, initialised to 0, that does not depend on the observation;
    - off: ``log_std_head``, a Linear from the actor's features, initialised like the mean head (gain 0.01, zero
      bias, under core.orthogonal_init), so the log std starts near 0 as in the reference and only its
      dependence on the observation differs.
    With ``cfg.squash_actions`` the distribution is ``TanhDiagGaussian`` (the env receives a squashed sample).
    """

    def __init__(self, obs_size: int, action_space: gym.Space | int, cfg: Config, masked: bool = False):
        super().__init__()
        if isinstance(action_space, int):
            action_space = gym.spaces.Discrete(action_space)
        self.masked = masked
        ortho = cfg.on("core.orthogonal_init")
        self.actor_trunk = mlp(obs_size, cfg.hidden_sizes, ortho)
        # shared trunk: the critic reads the actor's features
        separate = cfg.on(separate_networks_id(action_space))
        self.critic_trunk = mlp(obs_size, cfg.hidden_sizes, ortho) if separate else None
        self._init_heads(cfg.hidden_sizes[-1], action_space, cfg)

    def _init_heads(self, width: int, action_space: gym.Space, cfg: Config) -> None:
        """The policy head (and log std), the value head and the env-action transform, on features of ``width``."""
        ortho = cfg.on("core.orthogonal_init")
        self.continuous = isinstance(action_space, gym.spaces.Box)
        if self.continuous:
            act_dim = int(np.prod(action_space.shape))
            self.policy_head = layer_init(nn.Linear(width, act_dim), 0.01, ortho)  # cont.gaussian: the mean
            if cfg.on("cont.state_independent_logstd"):
                self.log_std = nn.Parameter(torch.zeros(act_dim))
                self.log_std_head = None
            else:
                self.register_parameter("log_std", None)
                self.log_std_head = layer_init(nn.Linear(width, act_dim), 0.01, ortho)
            self.dist = (TanhDiagGaussian(action_space.low, action_space.high) if cfg.squash_actions
                         else DiagGaussian)
        else:
            self.policy_head, self.dist = categorical_head(action_space, width, ortho)
        self.value_head = layer_init(nn.Linear(width, 1), 1.0, ortho)
        self.env_action = EnvAction(action_space, cfg)

    def _policy_params(self, features: torch.Tensor):
        """The distribution's parameters: logits, or (mean, log std) of the same shape."""
        out = self.policy_head(features)
        if not self.continuous:
            return out
        log_std = self.log_std.expand_as(out) if self.log_std_head is None else self.log_std_head(features)
        return out, log_std

    def _heads(self, obs: torch.Tensor):
        obs = obs.flatten(1)
        features = self.actor_trunk(obs)
        value_features = features if self.critic_trunk is None else self.critic_trunk(obs)
        return self._policy_params(features), self.value_head(value_features).squeeze(-1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.flatten(1)
        if self.critic_trunk is None:
            return self.value_head(self.actor_trunk(obs)).squeeze(-1)
        return self.value_head(self.critic_trunk(obs)).squeeze(-1)

    def _masked(self, params, mask: torch.Tensor | None):
        """aux.action_masking: a masked policy's Categorical takes the masked logits, its MultiCategorical
        (logits, mask), as it needs the mask to tell components without a valid action."""
        if not self.masked:
            return params
        if mask is None:
            raise ValueError("this policy was built for action masks (masked=True): pass the env's mask")
        return (params, mask) if isinstance(self.dist, MultiCategorical) else masked_logits(params, mask)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, rng: np.random.Generator | None, mask: torch.Tensor | None = None):
        """Rollout path: (action, log-prob of that action, value). ``rng`` None takes the most likely action (the
        mean for Box actions). ``mask``: the env's action mask of ``obs`` (bool), for a masked policy."""
        params, value = self._heads(obs)
        return (*self._sample(self._masked(params, mask), rng, value.device), value)

    def _sample(self, params, rng: np.random.Generator | None, device: torch.device):
        """(action, its log-prob) from the distribution's (masked) parameters; the mode where ``rng`` is None."""
        if rng is None:
            action = self.dist.mode(params)
        else:
            noise = torch.from_numpy(self.dist.noise(rng, self.dist.noise_shape(params))).to(device)
            action = self.dist.sample(params, noise)
        return action, self.dist.log_prob(params, action)

    def evaluate(self, obs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor | None = None):
        """Training path: (log-prob of ``actions``, entropy, value); ``mask`` the stored masks of a masked
        policy."""
        params, value = self._heads(obs)
        params = self._masked(params, mask)
        if isinstance(self.dist, MultiCategorical):  # one log-softmax for both
            return (*self.dist.log_prob_and_entropy(params, actions), value)
        return self.dist.log_prob(params, actions), self.dist.entropy(params), value


class CNNActorCritic(ActorCritic):
    """The reference's Atari policy (atari.nature_cnn): one shared ``NatureCNN`` trunk under the policy head
    (logits of a ``Categorical``, gain 0.01) and the value head (gain 1). It takes (N, C, H, W) images, uint8 as
    stored (the trunk divides by 255 with atari.scale_obs), and has ``ActorCritic``'s ``act``/``evaluate``, so
    the rollout and the update use it unchanged. It is not an ``ActorCritic`` for the numpy fast paths
    (``actors.make_actor`` and ``numpy_update.make_update`` test the exact type): it always runs in torch."""

    def __init__(self, obs_shape: tuple[int, ...], action_space: gym.spaces.Discrete, cfg: Config,
                 masked: bool = False):
        nn.Module.__init__(self)
        ortho = cfg.on("core.orthogonal_init")
        self.trunk = NatureCNN(tuple(obs_shape), ortho, scale=cfg.on("atari.scale_obs"))
        self.continuous = False
        self.masked = masked
        self.critic_trunk = None
        self.register_parameter("log_std", None)
        self.log_std_head = None
        self.policy_head, self.dist = categorical_head(action_space, self.trunk.out_size, ortho)
        self.value_head = layer_init(nn.Linear(self.trunk.out_size, 1), 1.0, ortho)
        self.env_action = EnvAction(action_space, cfg)

    def _heads(self, obs: torch.Tensor):
        features = self.trunk(obs)
        return self.policy_head(features), self.value_head(features).squeeze(-1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value_head(self.trunk(obs)).squeeze(-1)


class RecurrentActorCritic(ActorCritic):
    """A trunk, the LSTM core (``nets.LSTMCore``, the lstm.* details) and ``ActorCritic``'s heads, as the
    reference's recurrent networks: ``cnn_lstm`` (Nature CNN -> LSTM(512 -> lstm_size)) for images, ``lstm`` (the
    flattened observation straight into the LSTM) for vectors, or the hidden_sizes tanh MLP before the LSTM with
    ``cfg.lstm_mlp``. The policy and value heads both read the LSTM's output, as in the reference (its
    ``value_network='copy'`` does not apply to recurrent networks); the heads are built by ``ActorCritic`` and
    know nothing of the core, so every action kind it supports works here.

    The state of N envs is a (2, N, H) tensor (hidden, cell) that the caller carries: ``act`` and ``value`` take
    it with the episode starts of the step, ``evaluate`` takes the state of each sequence before its first step
    and replays the sequences. It is not an ``ActorCritic`` for the numpy fast paths (exact-type checks): it
    always runs in torch.
    """

    def __init__(self, obs_shape: tuple[int, ...], action_space: gym.Space, cfg: Config, cnn: bool):
        nn.Module.__init__(self)
        ortho = cfg.on("core.orthogonal_init")
        if cnn:
            self.trunk = NatureCNN(tuple(obs_shape), ortho, scale=cfg.on("atari.scale_obs"))
            width = self.trunk.out_size
        elif cfg.lstm_mlp:
            self.trunk = nn.Sequential(nn.Flatten(), mlp(math.prod(obs_shape), cfg.hidden_sizes, ortho))
            width = cfg.hidden_sizes[-1]
        else:
            self.trunk = nn.Flatten()
            width = math.prod(obs_shape)
        self.core = LSTMCore(width, cfg.lstm_size, cfg.on("lstm.init"), cfg.on("lstm.reset_on_done"))
        self.critic_trunk = None
        self.masked = False
        self._init_heads(cfg.lstm_size, action_space, cfg)

    def initial_state(self, num_envs: int) -> torch.Tensor:
        return self.core.initial_state(num_envs)

    def _step(self, obs: torch.Tensor, state: torch.Tensor, start: torch.Tensor):
        out, state = self.core.step(self.trunk(obs), state, start)
        return self._policy_params(out), self.value_head(out).squeeze(-1), state

    @torch.no_grad()
    def act(self, obs: torch.Tensor, state: torch.Tensor, start: torch.Tensor, rng: np.random.Generator | None):
        """Rollout path: (action, its log-prob, value, the state after the step); ``start`` (N,) marks the envs
        whose ``obs`` begins an episode (their state is reset first, lstm.reset_on_done)."""
        params, value, state = self._step(obs, state, start)
        return (*self._sample(params, rng, value.device), value, state)

    @torch.no_grad()
    def value(self, obs: torch.Tensor, state: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
        """V(obs) after ``state``, which is left as it is; ``start`` None: no env begins an episode."""
        return self._step(obs, state, torch.zeros(len(obs), device=obs.device) if start is None else start)[1]

    def evaluate(self, obs: torch.Tensor, actions: torch.Tensor, starts: torch.Tensor, state: torch.Tensor):
        """Training path over whole sequences: ``obs``, ``actions`` and ``starts`` hold T steps of k envs, t-major
        (row t * k + env), ``state`` (2, k, H) their state before the first step. Returns (log-prob, entropy,
        value) per row."""
        k = state.shape[1]
        features = self.trunk(obs)
        out = self.core.replay(features.view(-1, k, features.shape[-1]), starts.view(-1, k), state)
        out = out.reshape(len(obs), -1)
        params = self._policy_params(out)
        return self.dist.log_prob(params, actions), self.dist.entropy(params), self.value_head(out).squeeze(-1)


class GridActorCritic(CNNActorCritic):
    """Grid games with one group of actions per cell (Gym-muRTS's grid mode): (N, H, W, C) observations and
    MultiDiscrete actions of shape (H * W, c), cell-major. The ``GridCNN`` trunk's per-cell features feed the
    policy head, a 1x1 convolution that is one Linear applied to every cell (gain 0.01): sum(nvec_cell) logits
    per cell, sum(nvec) in all, split into independent Categoricals (multidiscrete.independent_categoricals);
    its global features feed the value head (gain 1). Runs in torch only, as ``CNNActorCritic``."""

    def __init__(self, obs_shape: tuple[int, ...], action_space: gym.spaces.MultiDiscrete, cfg: Config,
                 masked: bool = False):
        nn.Module.__init__(self)
        ortho = cfg.on("core.orthogonal_init")
        self.trunk = GridCNN(tuple(obs_shape), ortho)
        self.continuous = False
        self.masked = masked
        self.critic_trunk = None
        self.register_parameter("log_std", None)
        self.log_std_head = None
        per_cell = int(action_space.nvec[0].sum())
        self.policy_head = layer_init(nn.Conv2d(self.trunk.cell_size, per_cell, 1), 0.01, ortho)
        self.dist = MultiCategorical(action_space.nvec)
        self.value_head = layer_init(nn.Linear(self.trunk.out_size, 1), 1.0, ortho)
        self.env_action = EnvAction(action_space, cfg)

    def _heads(self, obs: torch.Tensor):
        cells, features = self.trunk(obs)
        # (N, per_cell, H, W) -> (N, H * W * per_cell): cell-major, as the actions and the env's masks
        logits = self.policy_head(cells).permute(0, 2, 3, 1).flatten(1)
        return logits, self.value_head(features).squeeze(-1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value_head(self.trunk(obs)[1]).squeeze(-1)






class EnvAction:
    """The action the env receives for the action the policy took: the one place where they differ.

    The rollout stores the policy's action, and its log-prob, and trains on them; only ``envs.step`` sees the
    result of this transform (``rollout.collect_rollout``, and evaluation). Discrete actions pass through. Box:

    - cont.action_clip on (the reference's ClipActionsWrapper): ``np.nan_to_num`` (NaN -> 0, +-inf -> the
      largest finite float), then clipped to the Box bounds; an infinite bound clips nothing. Off: the env
      receives the raw sample.
    - ``squash_actions``: the env receives low + (tanh(u) + 1) / 2 (high - low) of the sample u (the log-prob
      correction is in ``distributions.TanhDiagGaussian``); cont.action_clip then only catches float rounding.

    The flat (N, act_dim) action is reshaped to the space's shape and cast to its dtype; so are MultiDiscrete
    actions, stored as (N, K) for the K components.
    """

    def __init__(self, space: gym.Space, cfg: Config):
        self.box = isinstance(space, gym.spaces.Box)
        self.multi = isinstance(space, gym.spaces.MultiDiscrete)
        if self.multi:
            self.shape = space.shape
        if self.box:
            self.shape, self.dtype = space.shape, space.dtype
            self.low = space.low.reshape(-1).astype(np.float64)
            self.high = space.high.reshape(-1).astype(np.float64)
            self.clip = cfg.on("cont.action_clip")
            self.squash = bool(cfg.squash_actions)
            if self.squash:
                self.half_range = (self.high - self.low) / 2

    def __call__(self, action: np.ndarray) -> np.ndarray:
        if self.multi:
            return action.reshape(len(action), *self.shape)
        if not self.box:
            return action
        if self.squash:
            action = self.low + (np.tanh(action) + 1.0) * self.half_range
        if self.clip:
            action = np.clip(np.nan_to_num(action), self.low, self.high)
        return action.reshape(len(action), *self.shape).astype(self.dtype, copy=False)


def make_policy(observation_space: gym.Space, action_space: gym.Space, cfg: Config,
                masked: bool = False) -> ActorCritic:
    """The policy for these spaces; ``masked``: it takes the env's action masks (aux.action_masking), which
    only Discrete and MultiDiscrete actions have."""
    if not isinstance(observation_space, gym.spaces.Box):
        raise UserError(f"observation space {observation_space} is not supported yet; supported: {SUPPORTED}")
    if isinstance(action_space, gym.spaces.Box):
        if not np.issubdtype(action_space.dtype, np.floating):
            raise UserError(f"action space {action_space} has an integer dtype, which is not supported yet; "
                            f"supported: {SUPPORTED}")
        if cfg.squash_actions and not (np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()):
            raise UserError(f"squash_actions needs finite action bounds, and {action_space} has infinite ones; "
                            "train without --squash-actions (actions are then clipped where bounds are finite)")
        if masked:
            raise UserError(f"action masks are supported for Discrete and MultiDiscrete actions, not {action_space}; "
                            "train with --off aux.action_masking")
    elif not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
        raise UserError(f"action space {action_space} is not supported yet; supported: {SUPPORTED}")
    cnn = is_image_space(observation_space) and isinstance(action_space, gym.spaces.Discrete)
    if cfg.lstm_size:
        if masked:
            raise UserError("action masks with an LSTM policy are not supported yet; train without the LSTM or "
                            "with --off aux.action_masking")
        return RecurrentActorCritic(observation_space.shape, action_space, cfg, cnn)
    if cnn:
        return CNNActorCritic(observation_space.shape, action_space, cfg, masked)
    if is_grid_space(observation_space, action_space):
        return GridActorCritic(observation_space.shape, action_space, cfg, masked)
    return ActorCritic(int(math.prod(observation_space.shape)), action_space, cfg, masked)
