"""Rollout storage and collection (core.vector_envs)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import Config
from .envs import VecEnv


@dataclass
class Rollout:
    """Preallocated (T, N) storage, written in place every iteration.

    Step t holds obs_t, a_t, log pi_old(a_t), V(obs_t), r_t, d_t ("obs_t starts an episode") and the value of the
    final observation where step t was truncated. ``next_*`` belong to the observation the next rollout starts
    from, which is carried over: envs are never reset between iterations.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    starts: torch.Tensor
    final_values: torch.Tensor
    next_obs: torch.Tensor
    next_start: torch.Tensor
    next_value: torch.Tensor

    @classmethod
    def allocate(cls, num_steps: int, num_envs: int, obs_shape: tuple, device) -> "Rollout":
        def z(*shape, dtype=torch.float32):
            return torch.zeros(shape, dtype=dtype, device=device)
        return cls(obs=z(num_steps, num_envs, *obs_shape), actions=z(num_steps, num_envs, dtype=torch.long),
                   logprobs=z(num_steps, num_envs), values=z(num_steps, num_envs), rewards=z(num_steps, num_envs),
                   starts=z(num_steps, num_envs), final_values=z(num_steps, num_envs),
                   next_obs=z(num_envs, *obs_shape), next_start=z(num_envs), next_value=z(num_envs))


def collect_rollout(envs: VecEnv, policy, buf: Rollout, generator: torch.Generator, global_step: int,
                    cfg: Config) -> tuple[int, list[tuple[int, float, int]]]:
    """Fill ``buf`` with ``num_steps`` steps of every env, starting from ``buf.next_obs``/``buf.next_start``.

    Returns the global step after the rollout and the episodes that ended, as (global_step, return, length).
    """
    num_steps, num_envs = buf.actions.shape
    device = buf.obs.device
    rewards = np.zeros((num_steps, num_envs), dtype=np.float32)
    dones = np.zeros((num_steps, num_envs), dtype=np.float32)
    episodes = []
    truncation_bootstrap = cfg.on("opt.truncation_bootstrap")
    obs, start = buf.next_obs, buf.next_start
    for t in range(num_steps):
        buf.obs[t] = obs
        buf.starts[t] = start
        action, logprob, value = policy.act(obs, generator)
        buf.actions[t] = action
        buf.logprobs[t] = logprob
        buf.values[t] = value
        step = envs.step(action.cpu().numpy())
        global_step += num_envs
        rewards[t] = step.reward
        dones[t] = step.terminated | step.truncated
        buf.final_values[t] = 0.0
        if truncation_bootstrap:  # opt.truncation_bootstrap
            truncated = np.flatnonzero(step.truncated & ~step.terminated)
            if truncated.size:
                final = torch.as_tensor(step.final_obs[truncated], dtype=torch.float32, device=device)
                with torch.no_grad():
                    buf.final_values[t, torch.as_tensor(truncated, device=device)] = policy.value(final)
        obs = torch.as_tensor(step.obs, dtype=torch.float32, device=device)
        start = torch.as_tensor(dones[t], device=device)
        episodes += [(global_step, ret, length) for _, ret, length in step.episodes]
    buf.rewards.copy_(torch.from_numpy(rewards))
    buf.next_obs, buf.next_start = obs, start
    with torch.no_grad():
        buf.next_value = policy.value(obs)
    return global_step, episodes
