"""The reference's Atari vector env: ``make_atari_env`` envs with same-step autoreset and the vector-level
``FrameStack`` (atari.frame_stack), behind the ``vector.VecEnv`` contract.

Each env is the reference's per-env chain (``atari.make_atari_env``, switched by the ``details`` mapping, usually
``cfg.details``). A done is every terminated or truncated step the chain reports, a life loss under
atari.episodic_life included; the env is reset in the same step (for a life loss: the pseudo-reset) and its
stack is zeroed before its new first frame is written. ``final_obs`` holds the stacks the episodes ended with.
``episodes`` come from each env's ``RecordEpisodeStatistics``, inside episodic life and reward clipping: one per
real game over, full-game raw returns, lengths in agent steps. The emulators' state is not captured
(``get_state`` is None): a resumed run starts fresh episodes, and says so.
"""

from __future__ import annotations

from collections.abc import Mapping

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from .atari import make_atari_env, make_frame_stack
from .vector import Step, unpack_same_step_info


class AtariVectorEnv:
    """``num_envs`` Atari envs of the reference's chain stepped in one process, frames stacked on the vector."""

    def __init__(self, env_id: str, num_envs: int, details: Mapping[str, bool] | None = None,
                 render_mode: str | None = None, repeat_first: bool = False):
        self.env_id = env_id
        details = dict(details) if details is not None else None
        make_atari_env(env_id, details).close()  # an unknown or non-Atari id fails here, with its message

        def make_one():
            return make_atari_env(env_id, details, render_mode=render_mode)

        self.envs = gym.vector.SyncVectorEnv([make_one] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        self.num_envs = num_envs
        self.stack = make_frame_stack(num_envs, details, repeat_first=repeat_first)
        self.single_observation_space = self.stack.observation_space
        self.single_action_space = self.envs.single_action_space
        self.metadata = self.envs.envs[0].metadata

    def reset(self, seed: int) -> np.ndarray:
        frames, _ = self.envs.reset(seed=seed)
        return self.stack.reset(frames)

    def step(self, actions: np.ndarray) -> Step:
        frames, reward, terminated, truncated, info = self.envs.step(actions)
        dones = terminated | truncated
        final_frames, episodes = unpack_same_step_info(frames, info)
        obs, final = self.stack.step(frames, dones, final_frames if final_frames is not None else frames)
        return Step(obs, reward.astype(np.float32), terminated, truncated, final, episodes)

    def get_state(self) -> dict | None:
        return None  # the emulators' state is not captured: a resumed run starts fresh episodes

    def set_state(self, state: dict) -> None:
        raise NotImplementedError("the Atari envs' state is not captured")

    def render(self):
        """The first env's rgb_array frame (make the envs with render_mode="rgb_array")."""
        return self.envs.envs[0].render()

    def close(self) -> None:
        self.envs.close()
