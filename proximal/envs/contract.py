"""What every vector env promises the rollout (``Step``, ``VecEnv``) and what every one is given (``EnvOptions``).

This module is the seam of the env layer: the adapters (``vector``, ``atari_vector``, ``atari_backends``,
``microrts``) implement it, ``make`` picks one of them and the trainer and the rollout rely on nothing else, so
it imports no adapter, no policy and no config.

Autoreset contract: ``step`` returns, for every env, the reward of the action it was given, the terminated and
truncated flags of that step, and the observation the NEXT step starts from: the first observation of a new
episode where the episode just ended, whose last observation is in ``final_obs``. Every step is a transition (an
env that resets on the step after a done, as gymnasium's default mode and envpool do, is converted).

Action masks (aux.action_masking): ``action_masks()`` gives the masks of the observations the last ``reset`` or
``step`` returned, so after an autoreset the new episode's first mask; None where the envs have none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from ..errors import UserError
from ..spaces import action_mask_size


@dataclass
class Step:
    obs: np.ndarray  # (N, *obs_shape) observation the next step starts from
    reward: np.ndarray  # (N,) float
    terminated: np.ndarray  # (N,) bool
    truncated: np.ndarray  # (N,) bool
    final_obs: np.ndarray  # (N, *obs_shape); rows valid where terminated | truncated (may be obs itself)
    episodes: list[tuple[int, float, int]]  # (env index, return, length) of episodes that ended this step


class VecEnv(Protocol):
    num_envs: int
    single_observation_space: gym.Space
    single_action_space: gym.Space
    metadata: dict  # the envs' gymnasium metadata; evaluate reads "render_fps" for its videos

    def reset(self, seed: int) -> np.ndarray:
        """The first observations; env i is seeded with seed + i."""
    def step(self, actions: np.ndarray) -> Step: ...
    def action_masks(self) -> np.ndarray | None:
        """(N, mask size) bool masks of the current observations (``read_masks``); None where there are none."""
    def render(self) -> np.ndarray:
        """The first env's rgb_array frame; a UserError where the envs cannot render."""
    def get_state(self) -> dict | None:
        """Everything needed to continue the envs exactly, as tensors and plain values; None if the backend
        cannot capture it (a resumed run then starts fresh episodes)."""
    def set_state(self, state: dict) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class EnvOptions:
    """The settings of a run the adapters need (``make.env_options`` reads them from its config); the defaults
    are those of a run without a config: one process, every Atari detail on, the reference's emulator settings,
    the Python Atari chain."""

    workers: int = 1  # processes that step the envs (``workers.EnvGroups``)
    details: Mapping[str, bool] | None = None  # the run's detail switches; an absent ID is on
    repeat_first: bool = False  # the Atari frame stack starts with copies of the first frame, not zeros
    ale_options: Mapping[str, Any] = field(default_factory=dict)  # emulator keyword arguments, Python chain only
    backend: str = "python"  # who runs Atari ids: the Python chain, "envpool" or "ale"


def action_masks(envs) -> np.ndarray | None:
    """``envs.action_masks()``, or None for a vector env from outside proximal that lacks the method."""
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
