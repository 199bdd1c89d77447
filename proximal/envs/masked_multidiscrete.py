"""``proximal/MaskedMultiDiscrete-v0``: a small MultiDiscrete env with action masks, with no dependency beyond
gymnasium, for tests and quick checks of multidiscrete.independent_categoricals and aux.action_masking.

Each step, each of the four components (3, 5, 5 and 8 choices, so one group per distinct size and two components
sharing one) is active with probability 3/4. An active component has a target action, shown to the policy as a
one-hot block of the observation, and a random set of valid actions: the target and each other action with
probability 1/2. An inactive component has no valid action at all (like a grid cell without a unit): its block is
zero and its action is ignored. Reward per active component: +1 for the target, -1 for an invalid action, 0
otherwise. Episodes terminate after 8 steps; the best return is 8 x 4 x 3/4 = 24 on average. The mask comes as
``info["action_mask"]``: sum(nvec) int8 entries, the components' masks concatenated.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

NVEC = np.array([3, 5, 5, 8])
OFFSETS = np.concatenate([[0], np.cumsum(NVEC)[:-1]])
EPISODE_LENGTH = 8


class MaskedMultiDiscreteEnv(gym.Env):
    observation_space = gym.spaces.Box(0.0, 1.0, (int(NVEC.sum()),), np.float32)
    action_space = gym.spaces.MultiDiscrete(NVEC)

    def _draw(self):
        # flat arrays, not lists: the checkpoint captures the env attribute by attribute (envs/state.py)
        rng = self.np_random
        self.active = rng.random(len(NVEC)) < 0.75
        self.target = np.array([rng.integers(n) for n in NVEC])
        is_target = np.zeros(int(NVEC.sum()), bool)
        is_target[OFFSETS + self.target] = True
        self.valid = ((rng.random(len(is_target)) < 0.5) | is_target) & np.repeat(self.active, NVEC)
        obs = is_target & np.repeat(self.active, NVEC)
        return obs.astype(np.float32), {"action_mask": self.valid.astype(np.int8)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._draw()

    def step(self, action):
        action = np.asarray(action)
        hit = (action == self.target) & self.active
        invalid = ~self.valid[OFFSETS + action] & self.active
        reward = float(hit.sum() - invalid.sum())
        self.t += 1
        obs, info = self._draw()
        return obs, reward, self.t >= EPISODE_LENGTH, False, info
