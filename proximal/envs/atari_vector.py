"""The reference's Atari vector env: ``make_atari_env`` envs with same-step autoreset and the vector-level
``FrameStack`` (atari.frame_stack), behind the ``contract.VecEnv`` contract.

Each env is the reference's per-env chain (``atari.make_atari_env``, switched by ``options.details``, the run's
detail switches), stepped in this process or split over ``options.workers`` processes (``workers.EnvGroups``; the
same transitions either way). A done is every terminated or truncated step the chain reports, a life loss under
atari.episodic_life included; the env is reset in the same step (for a life loss: the pseudo-reset) and its
stack is zeroed before its new first frame is written. ``final_obs`` holds the stacks the episodes ended with.
``episodes`` come from each env's ``RecordEpisodeStatistics``, inside episodic life and reward clipping: one per
real game over, full-game raw returns, lengths in agent steps. ``get_state`` captures everything a resumed run
needs to continue the games exactly: each emulator (with its RNG), each wrapper's attributes, the stacks.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import torch

from ..video import RecordEpisodes
from .atari import make_atari_env, make_frame_stack
from .contract import EnvOptions, Step
from .workers import EnvGroups


class AtariVectorEnv:
    """``num_envs`` Atari envs of the reference's chain, frames stacked on the vector. ``options.ale_options``
    are emulator settings for ``make_atari_env`` (e.g. ``repeat_action_probability``). With ``video_dir``, env 0's
    games are recorded there with every emulator frame (``video.RecordEpisodes`` on the ale-py env, under
    the whole chain: a recorded episode is a game, every life of it)."""

    def __init__(self, env_id: str, num_envs: int, render_mode: str | None = None,
                 options: EnvOptions = EnvOptions(), video_dir: str | None = None):
        self.env_id = env_id
        details = dict(options.details) if options.details is not None else None
        make_one = partial(make_atari_env, env_id, details, render_mode=render_mode, **options.ale_options)
        make_one().close()  # an unknown or non-Atari id, or a bad emulator setting, fails here with its message
        first_env_fn = None
        if video_dir is not None:
            first_env_fn = partial(make_atari_env, env_id, details, render_mode="rgb_array",
                                   wrap_raw=partial(RecordEpisodes, video_dir=str(video_dir)), **options.ale_options)
        self.groups = EnvGroups(make_one, num_envs, options.workers, first_env_fn)
        self.num_envs = num_envs
        self.stack = make_frame_stack(num_envs, details, repeat_first=options.repeat_first)
        self.single_observation_space = self.stack.observation_space
        _, self.single_action_space, self.metadata = self.groups.spaces()

    def reset(self, seed: int) -> np.ndarray:
        return self.stack.reset(self.groups.reset(seed)[0])

    def step(self, actions: np.ndarray) -> Step:
        step, _ = self.groups.step(actions)
        obs, final = self.stack.step(step.obs, step.terminated | step.truncated, step.final_obs)
        return replace(step, obs=obs, reward=step.reward.astype(np.float32), final_obs=final)

    def action_masks(self) -> None:
        return None  # every Atari action is always valid

    def get_state(self) -> dict | None:
        state = self.groups.get_state()
        if state is not None:
            state["stack"] = torch.from_numpy(self.stack.obs.copy())
        return state

    def set_state(self, state: dict) -> None:
        self.groups.set_state(state)
        self.stack.obs[:] = state["stack"].numpy()

    def render(self):
        """The first env's rgb_array frame (make the envs with render_mode="rgb_array")."""
        return self.groups.render()

    def close(self) -> None:
        self.groups.close()
