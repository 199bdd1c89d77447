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


class CounterU8Env(CounterEnv):
    """CounterEnv's observations as uint8 (episode numbers wrap at 256)."""

    observation_space = gym.spaces.Box(0, 255, (2,), np.uint8)

    def _obs(self):
        return np.array([self.episode % 256, self.t], dtype=np.uint8)


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


class EndsAtTenEnv(ForeverEnv):
    """ForeverEnv that terminates at its 10th step; registered with a time limit of 10, which truncates it at the
    same step: every episode ends terminated and truncated at once."""

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return super().reset(seed=seed)

    def step(self, action):
        self.t += 1
        return np.ones(1, dtype=np.float32), 1.0, self.t >= 10, False, {}


class BoxRecorderEnv(gym.Env):
    """Box actions with narrow, per-dimension bounds, so that a Normal sample of std 1 is clipped most of the
    time. Every action the env receives is appended to ``received``; the reward is the received action's
    weighted sum (weights 1, 10, 100), so a stored reward tells what the env got. Observations of shape (2, 2)
    (flattened by the policy); episodes terminate after 4 steps."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2, 2), np.float32)
    action_space = gym.spaces.Box(np.array([-0.1, -0.2, 0.0], np.float32), np.array([0.3, 0.1, 0.5], np.float32))
    weights = np.array([1.0, 10.0, 100.0])

    def __init__(self):
        self.received = []

    def _obs(self):
        return np.array([[self.t, self.episode], [np.sin(self.t), np.cos(self.episode)]], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode = getattr(self, "episode", -1) + 1
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.received.append(np.array(action, copy=True))
        self.t += 1
        return self._obs(), float(self.weights[: len(action)] @ action), self.t >= 4, False, {}


class BoxUnboundedEnv(BoxRecorderEnv):
    """``BoxRecorderEnv`` with two action dimensions and infinite bounds: nothing is clipped."""

    action_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)


class TargetEnv(gym.Env):
    """One-step episodes: the observation is a target in [-1, 1]^2, the reward -|a - target|^2. The best policy
    puts its mean on the target and its std to 0; a random one (std 1) earns about -(2/3 + 2)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.target = self.np_random.uniform(-1.0, 1.0, 2).astype(np.float32)
        return self.target, {}

    def step(self, action):
        reward = -float(((np.asarray(action) - self.target) ** 2).sum())
        return self.target, reward, True, False, {}


class MaskedDiscreteEnv(gym.Env):
    """Discrete(4) with masks in ``info["action_mask"]``: the first observation of an episode allows only action 3;
    step t of an episode allows actions t % 3 and (t + 1) % 3. obs = (episode, t); reward = the action taken;
    episodes terminate after 3 steps. At step 2 of episode ``all_masked_episode`` every action is masked (an
    error for a Discrete env); -1 never."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Discrete(4)
    all_masked_episode = -1

    def _out(self):
        mask = np.zeros(4, np.int8)
        if self.t == 0:
            mask[3] = 1
        elif not (self.t == 2 and self.episode == self.all_masked_episode):
            mask[[self.t % 3, (self.t + 1) % 3]] = 1
        return np.array([self.episode, self.t], np.float32), {"action_mask": mask}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode = getattr(self, "episode", -1) + 1
        self.t = 0
        return self._out()

    def step(self, action):
        self.t += 1
        obs, info = self._out()
        return obs, float(action), self.t >= 3, False, info


class MaskedDictEnv(MaskedDiscreteEnv):
    """``MaskedDiscreteEnv`` with the mask as the ``action_mask`` key of a Dict observation (PettingZoo's way)."""

    observation_space = gym.spaces.Dict({"obs": MaskedDiscreteEnv.observation_space,
                                         "action_mask": gym.spaces.MultiBinary(4)})

    def _out(self):
        obs, info = super()._out()
        return {"obs": obs, "action_mask": info["action_mask"]}, {}


class AllMaskedEnv(MaskedDiscreteEnv):
    all_masked_episode = 1


def register() -> None:
    if "proximal-test/Counter-v0" not in gym.registry:
        gym.register("proximal-test/Counter-v0", entry_point=CounterEnv, max_episode_steps=5)
        gym.register("proximal-test/CounterU8-v0", entry_point=CounterU8Env, max_episode_steps=5)
        gym.register("proximal-test/Forever-v0", entry_point=ForeverEnv, max_episode_steps=10)
        gym.register("proximal-test/EndsAtTen-v0", entry_point=EndsAtTenEnv, max_episode_steps=10)
    if "proximal-test/BoxRecorder-v0" not in gym.registry:
        gym.register("proximal-test/BoxRecorder-v0", entry_point=BoxRecorderEnv)
        gym.register("proximal-test/BoxUnbounded-v0", entry_point=BoxUnboundedEnv)
        gym.register("proximal-test/Target-v0", entry_point=TargetEnv)
    if "proximal-test/MaskedDiscrete-v0" not in gym.registry:
        gym.register("proximal-test/MaskedDiscrete-v0", entry_point=MaskedDiscreteEnv)
        gym.register("proximal-test/MaskedDict-v0", entry_point=MaskedDictEnv)
        gym.register("proximal-test/AllMasked-v0", entry_point=AllMaskedEnv)
