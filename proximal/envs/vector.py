"""The vector-env contract the rollout relies on, and its gymnasium backend.

Autoreset contract: ``step`` returns, for every env, the reward of the action it was given, the terminated and
truncated flags of that step, and the observation the NEXT step starts from: the first observation of a new
episode where the episode just ended, whose last observation is in ``final_obs``. Every step is a transition.
gymnasium >= 1.0 defaults to next-step autoreset, where the step after a done returns the reset observation with
reward 0 and ignores the action; that step is not a transition, so this backend uses gymnasium's same-step mode.

Episode statistics come from each env's ``RecordEpisodeStatistics``: raw rewards, lengths in env steps.

Action masks (aux.action_masking), optional: a backend whose envs provide them has ``action_masks()``, the masks
of the observations the last ``reset`` or ``step`` returned, so after an autoreset the new episode's first mask.
gymnasium envs give them the gymnasium way, as ``info["action_mask"]`` or as the ``action_mask`` key of a Dict
observation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Protocol

import gymnasium as gym
import numpy as np

from ..config import Config, ale_options, env_worker_count
from ..errors import UserError
from ..spaces import action_mask_size
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
    # optional: def action_masks(self) -> np.ndarray | None, bool (N, mask size); see action_masks below


def action_masks(envs) -> np.ndarray | None:
    """The action masks of the envs' current observations, (N, mask size) bool; None where the backend or its
    envs provide none."""
    get = getattr(envs, "action_masks", None)
    return None if get is None else get()


def read_masks(raw, action_space: gym.Space, num_envs: int) -> np.ndarray:
    """Masks as an env gives them (any per-env shape holding n, or sum(nvec) for MultiDiscrete, entries in the
    order of the actions) to (N, mask size) bool. A Discrete env must leave some action valid; a MultiDiscrete
    component with none is normal (a grid cell without a unit): it is ignored."""
    masks = np.asarray(raw).reshape(num_envs, -1).astype(bool)
    size = action_mask_size(action_space)
    if masks.shape[1] != size:
        raise UserError(f"the env's action mask has {masks.shape[1]} entries per env, its action space {action_space} "
                        f"needs {size} (one per action, components concatenated); fix the env's mask")
    if isinstance(action_space, gym.spaces.Discrete) and not masks.any(1).all():
        raise UserError(f"the env returned an action mask with no valid action (env {int(np.flatnonzero(~masks.any(1))[0])}"
                        "): a Discrete env must leave at least one action valid; fix the env's mask, or train with "
                        "--off aux.action_masking")
    return masks


class MaskInInfo(gym.Wrapper):
    """A Dict observation with an ``action_mask`` key and one other key becomes that other observation, the mask
    moving to ``info["action_mask"]``: one way for the vector env to read masks."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        keys = [k for k in env.observation_space.spaces if k != "action_mask"]
        if len(keys) != 1:
            raise UserError(f"a Dict observation with an action_mask needs exactly one other key, got {keys}; "
                            "flatten the other keys into one Box")
        self.key = keys[0]
        self.observation_space = env.observation_space[self.key]

    def _split(self, obs, info):
        return obs[self.key], {**info, "action_mask": obs["action_mask"]}

    def reset(self, **kwargs):
        return self._split(*self.env.reset(**kwargs))

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs, info = self._split(obs, info)
        return obs, reward, terminated, truncated, info


def make_gym_env(env_id: str, render_mode: str | None = None) -> gym.Env:
    kwargs = {"render_mode": render_mode} if render_mode else {}
    env = gym.make(env_id, disable_env_checker=True, **kwargs)
    space = env.observation_space
    if isinstance(space, gym.spaces.Dict) and "action_mask" in space.spaces:
        env = MaskInInfo(env)
    return gym.wrappers.RecordEpisodeStatistics(env)


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
        self._action_offset = np.asarray(getattr(self.single_action_space, "start", 0))
        self._masks = None

    def reset(self, seed: int) -> np.ndarray:
        obs, self._masks = self.groups.reset(seed)
        return obs

    def step(self, actions: np.ndarray) -> Step:
        if self._action_offset.any():
            actions = actions + self._action_offset
        s = self.groups.step(actions)
        # same-step autoreset: an env that was reset reports its reset info, so this is the new episode's mask
        self._masks = s.masks
        return Step(s.obs, s.reward, s.terminated, s.truncated, s.obs.copy() if s.final_obs is None else s.final_obs,
                    s.episodes)

    def action_masks(self) -> np.ndarray | None:
        if self._masks is None:
            return None
        return read_masks(self._masks, self.single_action_space, self.num_envs)

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
    ids (``BreakoutNoFrameskip-v4``, ``ALE/Breakout-v5``); Gym-muRTS's grid mode (``microrts``) for
    ``MicroRTS-<map>-<bot>``; gymnasium's envs otherwise. ``cfg`` (the run's config; None: one process, every
    Atari detail on, the reference's emulator settings) gives the env worker processes (``env_workers``), the
    Atari details and options, and the Atari backend: "envpool" or "ale" runs an Atari id on that C++ vector env
    instead of the Python chain (``atari_backends``)."""
    from .microrts import MicroRTSVectorEnv, is_microrts_id

    if is_microrts_id(env_id):
        return MicroRTSVectorEnv(env_id, num_envs)
    if cfg is not None and cfg.backend != "python":
        from .atari_backends import make_backend_envs

        return make_backend_envs(cfg.backend, env_id, num_envs, cfg.details, cfg.atari_repeat_first)
    workers = 1 if cfg is None else env_worker_count(cfg)
    if is_atari_id(env_id):
        from .atari_vector import AtariVectorEnv

        if cfg is None:
            return AtariVectorEnv(env_id, num_envs, render_mode=render_mode)
        return AtariVectorEnv(env_id, num_envs, cfg.details, render_mode, repeat_first=cfg.atari_repeat_first,
                              workers=workers, ale_options=ale_options(cfg))
    return GymVectorEnv(env_id, num_envs, render_mode, workers)
