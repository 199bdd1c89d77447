"""Scripted environments for tests, registered under the `proximal-test/` namespace by conftest.py."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class CounterEnv(gym.Env):
    """obs = (episode number, step within the episode); reward = 1 + action, so a stored reward tells which
    action produced it. Episodes terminate after a seeded random length in 3..6; registered with a time limit of
    5, so episodes of length 6 are truncated and those of length 5 are both terminated and truncated."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self.episode = -1

    def _obs(self):
        return np.array([self.episode, self.t], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        self.length = int(self.np_random.integers(3, 7))
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 1.0 + float(action), self.t >= self.length, False, {}


class ForeverEnv(gym.Env):
    """Reward 1 at every step and no termination: the true value is 1 / (1 - gamma). Registered with a time
    limit of 10 steps, which truncates (does not terminate) every episode."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.ones(1, dtype=np.float32), {}

    def step(self, action):
        return np.ones(1, dtype=np.float32), 1.0, False, False, {}


def register() -> None:
    if "proximal-test/Counter-v0" not in gym.registry:
        gym.register("proximal-test/Counter-v0", entry_point=CounterEnv, max_episode_steps=5)
        gym.register("proximal-test/Forever-v0", entry_point=ForeverEnv, max_episode_steps=10)
