"""Observation normalization and reward scaling as the reference does them (baselines' ``VecNormalize`` wrapped
around ppo2's MuJoCo envs): cont.obs_norm, cont.obs_clip, cont.reward_scaling, cont.reward_clip.

The statistics are training state: the ``Normalizer`` lives in ``TrainerState.normalizer`` and goes into every
checkpoint (float64 tensors and plain values); ``NormalizedVecEnv`` only holds a reference to it and applies it to
what the inner vector env returns. Evaluation wraps its env with ``frozen=True``: observations are normalized
with the saved statistics, which never change, and rewards stay raw.

Where the envs are not wrapped at all (cont.obs_norm and cont.reward_scaling both off, the classic preset), nothing
here runs. cont.obs_clip acts only on normalized observations and cont.reward_clip only on scaled rewards, as in
the reference, where the clips are part of the normalization.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..config import Config
from ..errors import UserError
from .contract import Step, VecEnv

EPSILON = 1e-8  # added to the variance before the square root
CLIP = 10.0  # cont.obs_clip and cont.reward_clip bound


class RunningMeanStd:
    """Running mean and variance in float64, merged batch by batch with the parallel-variance update (Chan et
    al.), starting from the reference's prior: mean 0, var 1, count 1e-4."""

    def __init__(self, shape: tuple = ()):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4

    def update(self, x: np.ndarray) -> None:
        """Merge a batch (its first axis) into the statistics."""
        x = np.asarray(x, dtype=np.float64)
        batch_mean, batch_var, batch_count = x.mean(axis=0), x.var(axis=0), x.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + np.square(delta) * self.count * batch_count / total
        self.var = m2 / total
        self.count = float(total)

    def state_dict(self) -> dict:
        return {"mean": torch.from_numpy(np.array(self.mean, np.float64)),
                "var": torch.from_numpy(np.array(self.var, np.float64)), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean = state["mean"].numpy().astype(np.float64).reshape(self.mean.shape)
        self.var = state["var"].numpy().astype(np.float64).reshape(self.var.shape)
        self.count = float(state["count"])


class Normalizer:
    """The settings (from the config) and the statistics of observation normalization and reward scaling.

    ``obs_rms`` exists with cont.obs_norm; ``ret_rms`` and ``returns`` (each env's discounted return, the
    quantity whose variance scales the rewards) with cont.reward_scaling.
    """

    def __init__(self, obs_shape: tuple, num_envs: int, *, obs_norm: bool, obs_clip: bool, reward_scaling: bool,
                 reward_clip: bool, gamma: float):
        self.obs_clip, self.reward_clip, self.gamma = obs_clip, reward_clip, gamma
        self.obs_rms = RunningMeanStd(obs_shape) if obs_norm else None
        self.ret_rms = RunningMeanStd(()) if reward_scaling else None
        self.returns = np.zeros(num_envs, np.float64) if reward_scaling else None

    @classmethod
    def from_config(cls, cfg: Config, obs_shape: tuple, num_envs: int) -> "Normalizer | None":
        """None where the config neither normalizes observations nor scales rewards."""
        if not (cfg.on("cont.obs_norm") or cfg.on("cont.reward_scaling")):
            return None
        return cls(obs_shape, num_envs, obs_norm=cfg.on("cont.obs_norm"), obs_clip=cfg.on("cont.obs_clip"),
                   reward_scaling=cfg.on("cont.reward_scaling"), reward_clip=cfg.on("cont.reward_clip"),
                   gamma=cfg.reward_scaling_gamma)

    def normalize_obs(self, obs: np.ndarray, update: bool) -> np.ndarray:
        """cont.obs_norm: with ``update``, merge the batch into the statistics first; then
        (obs - mean) / sqrt(var + 1e-8), clipped to [-10, 10] with cont.obs_clip. float32, as the rollout stores."""
        if self.obs_rms is None:
            return obs
        if update:
            self.obs_rms.update(obs)
        normalized = (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + EPSILON)
        if self.obs_clip:  # cont.obs_clip
            normalized = np.clip(normalized, -CLIP, CLIP)
        return normalized.astype(np.float32)

    def scale_reward(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """cont.reward_scaling in the reference's order: ret <- ret * gamma + r; merge the N envs' rets into the
        running variance; r / sqrt(var(ret) + 1e-8), no mean subtracted (clipped to [-10, 10] with
        cont.reward_clip); then ret <- 0 where the episode ended, terminated or truncated. (gymnasium's
        NormalizeReward instead zeroes ret before adding r, and on termination only.)"""
        if self.ret_rms is None:
            return reward
        self.returns = self.returns * self.gamma + reward
        self.ret_rms.update(self.returns)
        scaled = reward / np.sqrt(self.ret_rms.var + EPSILON)
        if self.reward_clip:  # cont.reward_clip
            scaled = np.clip(scaled, -CLIP, CLIP)
        self.returns[done] = 0.0
        return scaled

    def reset_returns(self) -> None:
        if self.returns is not None:
            self.returns[:] = 0.0

    def state_dict(self) -> dict:
        """Checkpoint-safe: float64 tensors and plain values (weights-only loading refuses numpy)."""
        return {"obs": self.obs_rms.state_dict() if self.obs_rms is not None else None,
                "ret": self.ret_rms.state_dict() if self.ret_rms is not None else None,
                "returns": torch.from_numpy(self.returns.copy()) if self.returns is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Load in place: a ``NormalizedVecEnv`` holding this normalizer sees the loaded statistics."""
        for name, rms in (("obs", self.obs_rms), ("ret", self.ret_rms)):
            if (rms is None) != (state.get(name) is None):
                raise UserError(f"the checkpoint's normalizer {'lacks' if rms is not None else 'has'} '{name}' "
                                "statistics that its config " + ("asks for" if rms is not None else "does not use")
                                + "; the checkpoint is damaged or was not written by this version of proximal")
            if rms is not None:
                rms.load_state_dict(state[name])
        if self.returns is not None:
            self.returns = state["returns"].numpy().astype(np.float64).copy()


class NormalizedVecEnv:
    """A vector env (``vector.VecEnv`` contract) that normalizes what ``inner`` returns with ``normalizer``.

    Observations: the statistics merge every batch the inner env returns — reset observations included, since
    after an episode end the returned observation is the new episode's first — but never the final observations
    of ended episodes (the reference's VecNormalize never sees them); those are normalized with the statistics of
    that moment, without updating them, for the truncation bootstrap. Rewards are scaled; the episode statistics
    (RecordEpisodeStatistics inside each env) stay raw. ``frozen``: nothing is updated and rewards stay raw.
    """

    def __init__(self, inner: VecEnv, normalizer: Normalizer, *, frozen: bool = False):
        self.inner, self.normalizer, self.frozen = inner, normalizer, frozen
        self.num_envs = inner.num_envs
        self.single_observation_space = inner.single_observation_space
        self.single_action_space = inner.single_action_space

    def reset(self, seed: int) -> np.ndarray:
        obs = self.inner.reset(seed=seed)
        if not self.frozen:
            self.normalizer.reset_returns()
        return self.normalizer.normalize_obs(obs, update=not self.frozen)

    def step(self, actions: np.ndarray) -> Step:
        step = self.inner.step(actions)
        norm = self.normalizer
        obs = norm.normalize_obs(step.obs, update=not self.frozen)
        final_obs = norm.normalize_obs(step.final_obs, update=False)
        # a non-finite reward passes as the env gave it: the rollout's check then names that value and that env
        # (scaled, inf reads nan, in every env through the shared statistics, which never take it in: the run
        # stops at that check). One sum and a Python test: ~1 us a step, against ~2.6 for np.isfinite(...).all()
        keep = self.frozen or not math.isfinite(step.reward.sum())
        reward = step.reward if keep else norm.scale_reward(step.reward, step.terminated | step.truncated)
        return Step(obs, reward, step.terminated, step.truncated, final_obs, step.episodes)

    def get_state(self) -> dict | None:
        return self.inner.get_state()

    def set_state(self, state: dict) -> None:
        self.inner.set_state(state)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name):  # render, env_id, ... of the inner env
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def observation_dtype(envs: VecEnv) -> np.dtype:
    """The dtype of the observations ``envs`` return: float32 where they are normalized (cont.obs_norm), whatever
    the space's (a uint8 rollout would wrap them), the space's otherwise (uint8 frames stay uint8)."""
    if isinstance(envs, NormalizedVecEnv) and envs.normalizer.obs_rms is not None:
        return np.dtype(np.float32)
    return np.dtype(envs.single_observation_space.dtype)


def normalize_envs(envs: VecEnv, cfg: Config) -> tuple[VecEnv, Normalizer | None]:
    """The envs wrapped to normalize as ``cfg`` says, and their normalizer; ``envs`` themselves and None where
    cont.obs_norm and cont.reward_scaling are both off (nothing to do, nothing slowed down)."""
    normalizer = Normalizer.from_config(cfg, envs.single_observation_space.shape, envs.num_envs)
    if normalizer is None:
        return envs, None
    return NormalizedVecEnv(envs, normalizer), normalizer
