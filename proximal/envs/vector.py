"""gymnasium's envs behind the ``contract.VecEnv`` contract, in gymnasium's same-step autoreset mode.

gymnasium >= 1.0 defaults to next-step autoreset, where the step after a done returns the reset observation with
reward 0 and ignores the action; that step is not a transition, so the envs run in the same-step mode
(``workers.EnvGroups``), which the contract's autoreset is.

Episode statistics come from each env's ``RecordEpisodeStatistics``: raw rewards, lengths in env steps.

Action masks: gymnasium envs give them the gymnasium way, as ``info["action_mask"]`` or as the ``action_mask``
key of a Dict observation (``MaskInInfo`` moves the latter to the former).
"""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import numpy as np

from ..errors import UserError
from .contract import EnvOptions, Step, read_masks
from .workers import EnvGroups


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


class GymVectorEnv:
    """gymnasium envs with same-step autoreset, stepped in this process or split over ``options.workers``
    processes (``workers.EnvGroups``: the same transitions either way)."""

    def __init__(self, env_id: str, num_envs: int, render_mode: str | None = None,
                 options: EnvOptions = EnvOptions()):
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
        self.groups = EnvGroups(partial(make_gym_env, env_id, render_mode), num_envs, options.workers)
        self.num_envs = num_envs
        self.single_observation_space, self.single_action_space, self.metadata = self.groups.spaces()
        self._action_offset = np.asarray(getattr(self.single_action_space, "start", 0))
        self._masks = None

    def reset(self, seed: int) -> np.ndarray:
        obs, self._masks = self.groups.reset(seed)
        return obs

    def step(self, actions: np.ndarray) -> Step:
        if self._action_offset.any():
            actions = actions + self._action_offset
        # same-step autoreset: an env that was reset reports its reset info, so this is the new episode's mask
        step, self._masks = self.groups.step(actions)
        return step

    def action_masks(self) -> np.ndarray | None:
        if self._masks is None:
            return None
        return read_masks(self._masks, self.single_action_space, self.num_envs)

    def get_state(self) -> dict | None:
        return self.groups.get_state()

    def set_state(self, state: dict) -> None:
        self.groups.set_state(state)

    def render(self):
        """The first env's rgb_array frame (make the envs with render_mode="rgb_array")."""
        try:
            return self.groups.render()
        except Exception as e:  # noqa: BLE001 - GL and display errors come in many types; the message says which
            raise UserError(f"rendering {self.env_id} failed ({type(e).__name__}: {e}); on a machine without a "
                            "display, run with MUJOCO_GL=egl (or osmesa)") from None

    def close(self) -> None:
        self.groups.close()
