"""``Agent``: a trained policy for inference outside training, built from a checkpoint alone (no env).

It takes what an env returns (one observation or a batch), applies the run's observation normalization with the
statistics frozen at the checkpoint, and returns what the env takes: clipped or squashed Box actions as in
training, MultiDiscrete actions in the space's shape, a Discrete or MultiDiscrete space's ``start`` added. A
recurrent policy's state goes out with every action and comes back in with the next observation; ``start`` marks
the observations that begin an episode, where the state is reset (lstm.reset_on_done), as in training.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from . import checkpoint
from .actors import TorchActor
from .carry import Carry
from .config import Config
from .envs import VecEnv, make_envs
from .envs.normalize import Normalizer
from .errors import UserError
from .evaluate import policy_from_checkpoint
from .policy import ActorCritic
from .spaces import action_mask_size, space_from_dict
from .trainer import resolve_device


class Agent:
    """A policy with its config, normalizer and spaces. ``proximal.load(path)`` builds one from a run; a training
    callback can build one from the live policy with ``Agent.from_update(info)``. ``seed`` seeds the sampling of
    stochastic actions."""

    def __init__(self, policy: ActorCritic, cfg: Config, observation_space: gym.spaces.Box,
                 action_space: gym.Space, normalizer: Normalizer | None = None, seed: int = 0):
        self.policy, self.cfg, self.normalizer = policy, cfg, normalizer
        self.observation_space, self.action_space = observation_space, action_space
        self.rng = np.random.default_rng(seed)
        self._actor = TorchActor(policy, next(policy.parameters()).device)

    @classmethod
    def from_update(cls, info) -> "Agent":
        """The live policy of a training callback's ``UpdateInfo`` (not a copy: use it within the callback)."""
        return cls(info.policy, info.cfg, info.observation_space, info.action_space, info.normalizer)

    @property
    def recurrent(self) -> bool:
        return self.policy.core is not None

    def act(self, obs, state: np.ndarray | None = None, *, start=None, mask=None,
            deterministic: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(action for the env, the recurrent state after this step: None for a feedforward policy).

        ``obs``: one observation of the run's observation space or a batch of them (a leading axis); the action
        has the same leading axis or none. ``state``: what the previous call returned (None: the state before an
        episode's first step). ``start``: per observation, whether it begins an episode (the state is reset
        there; default: none does). ``mask``: the valid actions (bool, one row per observation), required by a
        policy trained with action masks. ``deterministic``: the most likely action (the mean for Box actions)
        instead of a sample."""
        obs, single = self._batch(obs)
        carry = self._carry(len(obs), state, start, mask)
        action, after = self._actor.sample(obs, carry, None if deterministic else self.rng)
        action = self.policy.dist.to_env(action)
        state = None if after.state is None else after.state.cpu().numpy()
        return (action[0] if single else action), state

    def value(self, obs, state: np.ndarray | None = None, *, start=None, mask=None) -> np.ndarray | float:
        """The value of one observation (a float) or of a batch, after ``state`` (which this does not advance);
        ``start`` and ``mask`` as for ``act``."""
        obs, single = self._batch(obs)
        value = self._actor.value(obs, self._carry(len(obs), state, start, mask))
        return float(value[0]) if single else value

    def _batch(self, obs) -> tuple[np.ndarray, bool]:
        """The observations as a normalized batch of the space's dtype, and whether one was given alone."""
        obs = np.asarray(obs)
        shape, dtype = self.observation_space.shape, self.observation_space.dtype
        if obs.shape == shape:
            single, obs = True, obs[None]
        elif obs.shape[1:] == shape and len(obs) > 0:
            single = False
        else:
            raise UserError(f"observation of shape {obs.shape}: this agent takes {shape} (one observation) or "
                            f"(N, {', '.join(map(str, shape))}) (a batch)")
        if not np.can_cast(obs.dtype, dtype, "same_kind"):
            raise UserError(f"observation of dtype {obs.dtype}: this agent takes {dtype} (the run's observation "
                            "space); pass what the env returns")
        obs = obs.astype(dtype, copy=False)
        if self.normalizer is not None:  # cont.obs_norm, with the statistics frozen
            obs = self.normalizer.normalize_obs(obs, update=False)
        return obs, single

    def _carry(self, n: int, state, start, mask) -> Carry:
        try:
            starts = np.zeros(n, np.float32) if start is None else np.broadcast_to(
                np.asarray(start, np.float32), (n,)).copy()
        except ValueError:  # numpy's message names neither the argument nor what it should be
            raise UserError(f"start of shape {np.shape(start)}: this agent takes one flag per observation, ({n},) "
                            "for this call (or one for all): 1.0 where an observation begins an episode") from None
        if state is None:
            state = self.policy.initial_state(n)
        elif not self.recurrent:
            raise UserError("this agent's policy is feedforward and has no state: pass state=None")
        else:
            state = torch.as_tensor(np.asarray(state, np.float32), device=self._actor.device)
            expected = tuple(self.policy.initial_state(n).shape)
            if tuple(state.shape) != expected:
                raise UserError(f"state of shape {tuple(state.shape)}: this agent's state for {n} observation(s) "
                                f"has shape {expected}; pass what act returned (or None to start afresh)")
        return Carry(starts, self._mask(n, mask), state)

    def _mask(self, n: int, mask) -> np.ndarray | None:
        if not self.policy.masked:
            if mask is not None:
                raise UserError("this agent's policy was trained without action masks: pass mask=None")
            return None
        if mask is None:
            raise UserError("this agent's policy was trained with action masks: pass mask= (the env's "
                            "info['action_mask'], one row per observation)")
        mask = np.asarray(mask, bool)
        size = action_mask_size(self.action_space)
        # a single observation's mask may come without the batch axis; a batch's needs one row per observation
        if mask.size != n * size or (n > 1 and mask.shape[:1] != (n,)):
            raise UserError(f"mask of shape {mask.shape}: this agent takes {size} entries per observation (one per "
                            f"action, components concatenated), ({n}, {size}) for {n} observation(s)")
        return mask.reshape(n, size)


def load(path: str | Path, device: str = "cpu", seed: int = 0) -> Agent:
    """The agent of a run directory (its newest checkpoint) or of a checkpoint file; no env is made."""
    resolve_device(str(device))  # before anything is read
    path = checkpoint.latest(Path(path))
    payload = checkpoint.load(path)
    policy, cfg, normalizer = policy_from_checkpoint(payload, device, f"checkpoint '{path}'")
    spaces = payload["spaces"]
    return Agent(policy, cfg, space_from_dict(spaces["observation"]), space_from_dict(spaces["action"]),
                 normalizer, seed)


def make_env(run, num_envs: int = 1, *, env=None, render_mode: str | None = None) -> VecEnv:
    """The envs a run (a run directory, a checkpoint file, an ``Agent`` or a ``Run``) trained on, with its
    preprocessing (for Atari the reference's wrapper chain and frame stack, as ``proximal eval`` plays them) but
    without its observation normalization, which the agent applies: a proximal vector env, ``reset(seed)`` -> observations, ``step(actions)`` -> ``Step`` (obs, reward,
    terminated, truncated, final_obs, episodes), ``action_masks()``, ``close()``. ``env``: the factory a
    factory-trained run needs again."""
    if isinstance(run, (str, os.PathLike)):
        cfg = Config.from_dict(checkpoint.load(checkpoint.latest(Path(run)))["config"])
    else:
        cfg = run.cfg
    # Python chain whichever backend trained, as evaluation does
    return make_envs(cfg.env_id, num_envs, render_mode, cfg=replace(cfg, backend="python"), factory=env)
