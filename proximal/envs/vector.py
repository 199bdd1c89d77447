"""The vector-env contract the rollout relies on, and its gymnasium backend.

Autoreset contract: ``step`` returns, for every env, the reward of the action it was given, the terminated and
truncated flags of that step, and the observation the NEXT step starts from: the first observation of a new
episode where the episode just ended, whose last observation is in ``final_obs``. Every step is a transition.
gymnasium >= 1.0 defaults to next-step autoreset, where the step after a done returns the reset observation with
reward 0 and ignores the action; that step is not a transition, so this backend uses gymnasium's same-step mode.

Episode statistics come from each env's ``RecordEpisodeStatistics``: raw rewards, lengths in env steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Protocol

import gymnasium as gym
import numpy as np

from ..config import Config, ale_options, env_worker_count
from ..errors import UserError
from . import state as env_state
from .workers import EnvGroups


@dataclass
class Step:
    obs: np.ndarray  # (N, *obs_shape) observation the next step starts from
    reward: np.ndarray  # (N,) float
    terminated: np.ndarray  # (N,) bool
    truncated: np.ndarray  # (N,) bool
    final_obs: np.ndarray  # (N, *obs_shape); rows valid where terminated | truncated
    episodes: list[tuple[int, float, int]]  # (env index, return, length) of episodes that ended this step


class VecEnv(Protocol):
    num_envs: int
    single_observation_space: gym.Space
    single_action_space: gym.Space

    def reset(self, seed: int) -> np.ndarray: ...
    def step(self, actions: np.ndarray) -> Step: ...
    def get_state(self) -> dict | None:
        """Everything needed to continue the envs exactly, as tensors and plain values; None if the backend
        cannot capture it (a resumed run then starts fresh episodes)."""
    def set_state(self, state: dict) -> None: ...
    def close(self) -> None: ...


def make_gym_env(env_id: str, render_mode: str | None = None) -> gym.Env:
    kwargs = {"render_mode": render_mode} if render_mode else {}
    return gym.wrappers.RecordEpisodeStatistics(gym.make(env_id, disable_env_checker=True, **kwargs))


def first_spaces(envs) -> list:
    return [(envs[0].observation_space, envs[0].action_space, envs[0].metadata)]


def render_first(envs) -> list:
    return [envs[0].render()]


class GymVectorEnv:
    """gymnasium envs with same-step autoreset, stepped in this process or split over ``workers`` processes
    (``workers.EnvGroups``: the same transitions either way)."""

    def __init__(self, env_id: str, num_envs: int, render_mode: str | None = None, workers: int = 1):
        self.env_id = env_id
        try:
            gym.spec(env_id)
        except gym.error.Error as e:
            raise UserError(f"unknown environment '{env_id}' ({e}); list the registered ids with "
                            "python -c \"import gymnasium; gymnasium.pprint_registry()\"") from None
        try:
            make_gym_env(env_id).close()  # a missing dependency fails here, in this process, with its message
        except gym.error.DependencyNotInstalled as e:
            raise UserError(f"environment '{env_id}' needs a package that is not installed: {e}") from None
        self.groups = EnvGroups(partial(make_gym_env, env_id, render_mode), num_envs, workers)
        self.num_envs = num_envs
        self.single_observation_space, self.single_action_space, self.metadata = self.groups.call(first_spaces)[0]
        self._action_offset = getattr(self.single_action_space, "start", 0)

    def reset(self, seed: int) -> np.ndarray:
        return self.groups.reset(seed)

    def step(self, actions: np.ndarray) -> Step:
        if self._action_offset:
            actions = actions + self._action_offset
        s = self.groups.step(actions)
        return Step(s.obs, s.reward, s.terminated, s.truncated, s.obs.copy() if s.final_obs is None else s.final_obs,
                    s.episodes)

    def get_state(self) -> dict | None:
        return capture_groups(self.groups)

    def set_state(self, state: dict) -> None:
        self.groups.call(env_state.restore_all, state["envs"])

    def render(self):
        """The first env's rgb_array frame (make the envs with render_mode="rgb_array")."""
        try:
            return self.groups.call(render_first)[0]
        except Exception as e:  # noqa: BLE001 - GL and display errors come in many types; the message says which
            raise UserError(f"rendering {self.env_id} failed ({type(e).__name__}: {e}); on a machine without a "
                            "display, run with MUJOCO_GL=egl (or osmesa)") from None

    def close(self) -> None:
        self.groups.close()


def capture_groups(groups: EnvGroups) -> dict | None:
    """Every env's state (``state.capture``), or None where one cannot be captured."""
    states = groups.call(env_state.capture_all)
    return None if any(s is None for s in states) else {"envs": states}


def is_atari_id(env_id: str) -> bool:
    try:
        return "ale_py" in str(gym.spec(env_id).entry_point)
    except gym.error.Error:  # ale-py registers its ids when imported
        from .atari import is_atari

        return is_atari(env_id)


def make_envs(env_id: str, num_envs: int, render_mode: str | None = None, cfg: Config | None = None) -> VecEnv:
    """The vector env for ``env_id``: the reference's Atari chain and frame stack (``atari_vector``) for ale-py
    ids (``BreakoutNoFrameskip-v4``, ``ALE/Breakout-v5``), gymnasium's envs otherwise. ``cfg`` (the run's config;
    None: one process, every Atari detail on, the reference's emulator settings) gives the env worker processes
    (``env_workers``), the Atari details and the Atari options."""
    workers = 1 if cfg is None else env_worker_count(cfg)
    if is_atari_id(env_id):
        from .atari_vector import AtariVectorEnv

        if cfg is None:
            return AtariVectorEnv(env_id, num_envs, render_mode=render_mode)
        return AtariVectorEnv(env_id, num_envs, cfg.details, render_mode, repeat_first=cfg.atari_repeat_first,
                              workers=workers, ale_options=ale_options(cfg))
    return GymVectorEnv(env_id, num_envs, render_mode, workers)
