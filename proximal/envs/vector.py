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
from typing import Protocol

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from ..errors import UserError
from . import state as env_state


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


class GymVectorEnv:
    """gymnasium envs stepped in one process with same-step autoreset."""

    def __init__(self, env_id: str, num_envs: int, render_mode: str | None = None):
        self.env_id = env_id
        try:
            gym.spec(env_id)
        except gym.error.Error as e:
            raise UserError(f"unknown environment '{env_id}' ({e}); list the registered ids with "
                            "python -c \"import gymnasium; gymnasium.pprint_registry()\"") from None

        def make_one():
            kwargs = {"render_mode": render_mode} if render_mode else {}
            env = gym.make(env_id, disable_env_checker=True, **kwargs)
            return gym.wrappers.RecordEpisodeStatistics(env)

        try:
            self.envs = gym.vector.SyncVectorEnv([make_one] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        except gym.error.DependencyNotInstalled as e:
            raise UserError(f"environment '{env_id}' needs a package that is not installed: {e}") from None
        self.num_envs = num_envs
        self.single_observation_space = self.envs.single_observation_space
        self.single_action_space = self.envs.single_action_space
        self.metadata = self.envs.envs[0].metadata  # render_fps for videos
        self._action_offset = getattr(self.single_action_space, "start", 0)

    def reset(self, seed: int) -> np.ndarray:
        obs, _ = self.envs.reset(seed=seed)
        return obs

    def step(self, actions: np.ndarray) -> Step:
        if self._action_offset:
            actions = actions + self._action_offset
        obs, reward, terminated, truncated, info = self.envs.step(actions)
        final_obs, episodes = unpack_same_step_info(obs, info)
        return Step(obs, reward, terminated, truncated, obs.copy() if final_obs is None else final_obs, episodes)

    def get_state(self) -> dict | None:
        return env_state.capture(self.envs.envs)

    def set_state(self, state: dict) -> None:
        env_state.restore(self.envs.envs, state)

    def render(self):
        """The first env's rgb_array frame (make the envs with render_mode="rgb_array")."""
        try:
            return self.envs.envs[0].render()
        except Exception as e:  # noqa: BLE001 - GL and display errors come in many types; the message says which
            raise UserError(f"rendering {self.env_id} failed ({type(e).__name__}: {e}); on a machine without a "
                            "display, run with MUJOCO_GL=egl (or osmesa)") from None

    def close(self) -> None:
        self.envs.close()


def unpack_same_step_info(obs: np.ndarray, info: dict) -> tuple[np.ndarray | None, list[tuple[int, float, int]]]:
    """From a step of gymnasium's same-step-autoreset vector env: the final observations (``obs`` with the rows
    of the envs whose episode ended replaced by their last observation; None when no episode ended) and the
    ended episodes' (env index, return, length) from each env's RecordEpisodeStatistics."""
    if "_final_obs" not in info:
        return None, []
    final_obs = obs.copy()
    for i in np.flatnonzero(info["_final_obs"]):
        final_obs[i] = info["final_obs"][i]
    episodes = []
    episode = info["final_info"].get("episode")
    if episode is not None:
        for i in np.flatnonzero(episode["_r"]):
            episodes.append((int(i), float(episode["r"][i]), int(episode["l"][i])))
    return final_obs, episodes


def is_atari_id(env_id: str) -> bool:
    try:
        return "ale_py" in str(gym.spec(env_id).entry_point)
    except gym.error.Error:  # ale-py registers its ids when imported
        from .atari import is_atari

        return is_atari(env_id)


def make_envs(env_id: str, num_envs: int, render_mode: str | None = None, details: dict | None = None,
              backend: str = "python") -> VecEnv:
    """The vector env for ``env_id``: the reference's Atari chain and frame stack (``atari_vector``) for ale-py
    ids (``BreakoutNoFrameskip-v4``, ``ALE/Breakout-v5``), switched by ``details`` (``cfg.details``; None: every
    Atari detail on); gymnasium's envs otherwise. ``backend`` "envpool" or "ale" runs an Atari id on that C++
    vector env instead (``atari_backends``)."""
    if backend != "python":
        from .atari_backends import make_backend_envs

        return make_backend_envs(backend, env_id, num_envs, details)
    if is_atari_id(env_id):
        from .atari_vector import AtariVectorEnv

        return AtariVectorEnv(env_id, num_envs, details, render_mode)
    return GymVectorEnv(env_id, num_envs, render_mode)
