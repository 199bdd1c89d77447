"""Rollout storage and collection (core.vector_envs)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from .config import Config
from .envs import VecEnv, action_masks


@dataclass
class Rollout:
    """Preallocated (T, N) numpy storage, written in place every iteration.

    Step t holds obs_t, a_t, log pi_old(a_t), V(obs_t), r_t, d_t ("obs_t starts an episode") and the value of the
    final observation where step t was truncated. a_t is the action the policy took, before ``policy.EnvAction``
    (for Box actions the unclipped sample, (T, N, act_dim) float32). ``next_*`` belong to the observation the next
    rollout starts from, which is carried over: envs are never reset between iterations. Where the policy is
    masked (aux.action_masking), ``masks[t]`` is the env's action mask of obs_t, which the update uses again,
    and ``next_mask`` that of ``next_obs``.

    Recurrent policies (None otherwise): ``next_state`` is the (2, N, H) LSTM state the next rollout starts from,
    carried over like ``next_obs``, and ``start_state`` the state this rollout started from, which training
    replays each sequence from (lstm.reconstruct_states); torch tensors on the policy's device.
    """

    obs: np.ndarray
    actions: np.ndarray
    logprobs: np.ndarray
    values: np.ndarray
    rewards: np.ndarray
    starts: np.ndarray
    final_values: np.ndarray
    next_obs: np.ndarray
    next_start: np.ndarray
    next_value: np.ndarray
    next_state: torch.Tensor | None = None
    start_state: torch.Tensor | None = None
    masks: np.ndarray | None = None
    next_mask: np.ndarray | None = None

    @classmethod
    def allocate(cls, num_steps: int, num_envs: int, obs_shape: tuple,
                 action_space: gym.Space | None = None, obs_dtype=np.float32,
                 mask_size: int | None = None) -> "Rollout":
        """Storage for ``action_space``'s actions as the policy takes them: (T, N) int64 for Discrete (the
        default), (T, N, K) int64 for MultiDiscrete's K components, (T, N, act_dim) float32 for Box (the
        unclipped sample, cont.action_clip). Observations are stored as float32, or as uint8 where ``obs_dtype``
        is uint8 (Atari frames, muRTS grids). ``mask_size``: bool action masks of that many entries per env."""
        obs_dtype = np.uint8 if np.dtype(obs_dtype) == np.uint8 else np.float32
        def z(*shape, dtype=np.float32):
            return np.zeros(shape, dtype=dtype)
        if isinstance(action_space, gym.spaces.Box):
            actions = z(num_steps, num_envs, math.prod(action_space.shape))
        elif isinstance(action_space, gym.spaces.MultiDiscrete):
            actions = z(num_steps, num_envs, action_space.nvec.size, dtype=np.int64)
        else:
            actions = z(num_steps, num_envs, dtype=np.int64)
        return cls(obs=z(num_steps, num_envs, *obs_shape, dtype=obs_dtype), actions=actions,
                   logprobs=z(num_steps, num_envs), values=z(num_steps, num_envs), rewards=z(num_steps, num_envs),
                   starts=z(num_steps, num_envs), final_values=z(num_steps, num_envs),
                   next_obs=z(num_envs, *obs_shape, dtype=obs_dtype), next_start=z(num_envs), next_value=z(num_envs),
                   masks=None if mask_size is None else z(num_steps, num_envs, mask_size, dtype=bool),
                   next_mask=None if mask_size is None else z(num_envs, mask_size, dtype=bool))

    def training_batch(self, advantages: np.ndarray, returns: np.ndarray, device: torch.device) -> dict:
        """The rollout flattened over (step, env) as torch tensors on ``device`` (no copy on the CPU); row t * N + env.
        For recurrent policies also the episode starts and ``start_state``, which the replay needs."""
        arrays = {"obs": self.obs, "actions": self.actions, "logprobs": self.logprobs, "values": self.values,
                  "advantages": advantages, "returns": returns}
        if self.start_state is not None:
            arrays["starts"] = self.starts
        if self.masks is not None:
            arrays["masks"] = self.masks
        batch = {k: torch.from_numpy(v.reshape(-1, *v.shape[2:])).to(device) for k, v in arrays.items()}
        if self.start_state is not None:
            batch["start_state"] = self.start_state.to(device)
        return batch


@dataclass
class RolloutTimes:
    """Wall seconds a rollout spent in ``envs.step`` (env) and in the actor's ``act``/``value`` calls
    (inference), added to by every ``collect_rollout`` it is passed to."""

    env: float = 0.0
    inference: float = 0.0


def collect_rollout(envs: VecEnv, actor, buf: Rollout, rng: np.random.Generator, global_step: int,
                    cfg: Config, times: RolloutTimes | None = None) -> tuple[int, list[tuple[int, float, int]]]:
    """Fill ``buf`` with ``num_steps`` steps of every env, starting from ``buf.next_obs``/``buf.next_start``.

    Returns the global step after the rollout and the episodes that ended, as (global_step, return, length).
    With ``times``, the seconds spent stepping the envs and running the actor are added to it. Where ``buf``
    stores masks (aux.action_masking), the actor gets each observation's mask, read from the envs after the step
    that returned the observation (after an autoreset: the new episode's first mask).
    """
    num_steps, num_envs = buf.actions.shape[:2]
    truncation_bootstrap = cfg.on("opt.truncation_bootstrap")
    episodes = []
    obs, start, mask = buf.next_obs, buf.next_start, buf.next_mask
    state = buf.next_state  # recurrent policies only
    buf.start_state = state  # lstm.reconstruct_states: training replays each sequence from it
    clock = time.perf_counter
    env_seconds = inference_seconds = 0.0
    for t in range(num_steps):
        buf.obs[t] = obs
        buf.starts[t] = start
        t0 = clock()
        if state is not None:
            action, buf.logprobs[t], buf.values[t], state = actor.act(obs, rng, state, start)
        elif mask is not None:
            buf.masks[t] = mask
            action, buf.logprobs[t], buf.values[t] = actor.act(obs, rng, mask)
        else:
            action, buf.logprobs[t], buf.values[t] = actor.act(obs, rng)
        t1 = clock()
        # cont.action_clip: the env gets the clipped (or squashed) action, the rollout stores the policy's own;
        # timed as env time, as the reference's ClipActionsWrapper is part of its env
        step = envs.step(actor.env_action(action))
        t2 = clock()
        inference_seconds += t1 - t0
        env_seconds += t2 - t1
        buf.actions[t] = action
        global_step += num_envs
        buf.rewards[t] = step.reward
        buf.final_values[t] = 0.0
        if truncation_bootstrap:  # opt.truncation_bootstrap: V(final obs) from the rollout-time network
            truncated = np.flatnonzero(step.truncated & ~step.terminated)
            if truncated.size:
                t0 = clock()
                final_obs = step.final_obs[truncated]
                # an LSTM sees the final observation after the episode's last state, without a reset
                buf.final_values[t, truncated] = (actor.value(final_obs) if state is None
                                                  else actor.value(final_obs, state[:, truncated]))
                inference_seconds += clock() - t0
        obs, start = step.obs, (step.terminated | step.truncated).astype(np.float32)
        if mask is not None:
            mask = action_masks(envs)
        episodes += [(global_step, ret, length) for _, ret, length in step.episodes]
    buf.next_obs[:] = obs
    buf.next_start[:] = start
    buf.next_state = state
    if mask is not None:
        buf.next_mask[:] = mask
    t0 = clock()
    buf.next_value[:] = actor.value(obs) if state is None else actor.value(obs, state, start)
    if times is not None:
        times.inference += inference_seconds + (clock() - t0)
        times.env += env_seconds
    return global_step, episodes
