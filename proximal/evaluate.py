"""Evaluation of a trained policy on fresh episodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import checkpoint
from .actors import make_actor
from .config import Config
from .envs import make_envs
from .envs.normalize import NormalizedVecEnv, Normalizer
from .policy import make_policy
from .trainer import resolve_device


def load_policy(path: Path, device: str = "cpu"):
    """(policy, config, normalizer) from a run directory (its newest checkpoint) or a checkpoint file. The
    normalizer holds the run's observation statistics at that checkpoint (None where the run did not normalize):
    the policy was trained on observations normalized with them, so evaluate with them."""
    payload = checkpoint.load(checkpoint.latest(path))
    cfg = Config.from_dict(payload["config"])
    envs = make_envs(cfg.env_id, 1)
    try:
        policy = make_policy(envs.single_observation_space, envs.single_action_space, cfg)
        normalizer = Normalizer.from_config(cfg, envs.single_observation_space.shape, cfg.num_envs)
    finally:
        envs.close()
    policy.load_state_dict(payload["policy"])
    if normalizer is not None:
        normalizer.load_state_dict(payload["normalizer"])
    return policy.to(resolve_device(device)).eval(), cfg, normalizer


def evaluate(policy, env_id: str, episodes: int, seed: int = 0, deterministic: bool = False,
             normalizer: Normalizer | None = None) -> np.ndarray:
    """Returns of ``episodes`` full episodes, one env, seeded with ``seed``. With ``normalizer``, the policy sees
    observations normalized with its statistics, frozen (cont.obs_norm); returns are raw either way."""
    actor = make_actor(policy, next(policy.parameters()).device)
    rng = None if deterministic else np.random.default_rng(seed)
    envs = make_envs(env_id, 1)
    if normalizer is not None:
        envs = NormalizedVecEnv(envs, normalizer, frozen=True)
    returns = []
    try:
        obs = envs.reset(seed=seed)
        while len(returns) < episodes:
            action, _, _ = actor.act(obs, rng)
            step = envs.step(actor.env_action(action))  # clipped (or squashed) as in training: cont.action_clip
            returns += [ret for _, ret, _ in step.episodes]
            obs = step.obs
    finally:
        envs.close()
    return np.asarray(returns[:episodes])
