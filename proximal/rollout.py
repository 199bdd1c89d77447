"""Rollout storage and collection (core.vector_envs)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .config import Config
from .carry import Carry
from .envs import VecEnv


@dataclass
class Rollout:
    """Preallocated (T, N) numpy storage, written in place every iteration.

    Step t holds obs_t, a_t, log pi_old(a_t), V(obs_t), r_t, d_t ("obs_t starts an episode") and the value of the
    final observation where step t was truncated. a_t is the action the policy took, before the distribution's
    ``to_env`` (for Box actions the unclipped sample, (T, N, act_dim) float32). ``next_value`` and ``next_start``
    belong to the observation after the last step, which GAE bootstraps from (the next rollout starts from it:
    envs are never reset between iterations). Where the policy is masked (aux.action_masking), ``masks[t]`` is the
    env's action mask of obs_t, which the update uses again. Recurrent policies: ``start_state`` is the (2, N, H)
    state this rollout started from, which training replays each sequence from (lstm.reconstruct_states), a torch
    tensor on the policy's device; None otherwise.
    """

    obs: np.ndarray
    actions: np.ndarray
    logprobs: np.ndarray
    values: np.ndarray
    rewards: np.ndarray
    starts: np.ndarray
    final_values: np.ndarray
    next_value: np.ndarray
    next_start: np.ndarray
    masks: np.ndarray | None = None
    start_state: torch.Tensor | None = None

    @classmethod
    def allocate(cls, num_steps: int, num_envs: int, obs_shape: tuple, action_shape: tuple = (),
                 action_dtype=np.int64, obs_dtype=np.float32, mask_size: int | None = None) -> "Rollout":
        """Storage for actions of ``action_shape`` and ``action_dtype`` per env as the policy takes them (its
        distribution's: () int64 for Discrete, the default; (K,) int64 for MultiDiscrete's K components;
        (act_dim,) float32 for Box). Observations are stored as float32, or as uint8 where ``obs_dtype`` is uint8
        (Atari frames, muRTS grids). ``mask_size``: bool action masks of that many entries per env."""
        obs_dtype = np.uint8 if np.dtype(obs_dtype) == np.uint8 else np.float32
        def z(*shape, dtype=np.float32):
            return np.zeros(shape, dtype=dtype)
        return cls(obs=z(num_steps, num_envs, *obs_shape, dtype=obs_dtype),
                   actions=z(num_steps, num_envs, *action_shape, dtype=action_dtype),
                   logprobs=z(num_steps, num_envs), values=z(num_steps, num_envs), rewards=z(num_steps, num_envs),
                   starts=z(num_steps, num_envs), final_values=z(num_steps, num_envs),
                   next_value=z(num_envs), next_start=z(num_envs),
                   masks=None if mask_size is None else z(num_steps, num_envs, mask_size, dtype=bool))

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


def collect_rollout(envs: VecEnv, actor, buf: Rollout, obs: np.ndarray, carry: Carry, rng: np.random.Generator,
                    global_step: int, cfg: Config, times: RolloutTimes | None = None):
    """Fill ``buf`` with ``num_steps`` steps of every env, starting from observation ``obs`` and ``carry``.

    Returns (the observation and the carry the next rollout starts from, the global step after the rollout, the
    episodes that ended, as (global_step, return, length)). With ``times``, the seconds spent stepping the envs
    and running the actor are added to it.
    """
    num_steps, num_envs = buf.actions.shape[:2]
    truncation_bootstrap = cfg.on("opt.truncation_bootstrap")
    scores_later = actor.scores_later  # log-probs and values filled in after the loop, for the whole rollout
    episodes = []
    buf.start_state = carry.state  # lstm.reconstruct_states: training replays each sequence from it
    clock = time.perf_counter
    env_seconds = inference_seconds = 0.0
    buf.final_values[:] = 0.0
    # the policy's weights in bf16 once (TorchActor.rollout); the rollout's sampling noise at once (NumpyMLPActor)
    with actor.rollout(rng, num_steps, num_envs):
        for t in range(num_steps):
            buf.obs[t] = obs
            buf.starts[t] = carry.start
            if buf.masks is not None:
                buf.masks[t] = carry.mask
            t0 = clock()
            if scores_later:
                action, carry = actor.sample(obs, carry, rng)
            else:
                action, buf.logprobs[t], buf.values[t], carry = actor.act(obs, carry, rng)
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
            # opt.truncation_bootstrap: V(final obs) from the rollout-time network
            if truncation_bootstrap and np.count_nonzero(step.truncated):  # a fifth of .any()'s cost
                truncated = np.flatnonzero(step.truncated & ~step.terminated)
                if truncated.size:
                    t0 = clock()
                    buf.final_values[t, truncated] = actor.value(step.final_obs[truncated],
                                                                 carry.continuing(truncated))
                    inference_seconds += clock() - t0
            obs, carry = step.obs, carry.after_step(step.terminated | step.truncated, envs)
            if step.episodes:  # most steps end none
                episodes += [(global_step, ret, length) for _, ret, length in step.episodes]
        t0 = clock()
        if scores_later:
            num_rows = num_steps * num_envs
            logprobs, values = actor.score(buf.obs.reshape(num_rows, -1),
                                           buf.actions.reshape(num_rows, *buf.actions.shape[2:]))
            buf.logprobs[:] = logprobs.reshape(num_steps, num_envs)
            buf.values[:] = values.reshape(num_steps, num_envs)
        buf.next_value[:] = actor.value(obs, carry)
        buf.next_start[:] = carry.start
    if times is not None:
        times.inference += inference_seconds + (clock() - t0)
        times.env += env_seconds
    return obs, carry, global_step, episodes
