"""A memory task: CartPole with the velocities hidden, registered as ``proximal/CartPoleNoVelocity-v1``.

The observation is the cart position and the pole angle only; the velocities, which a policy needs to balance
the pole, must be inferred from successive observations. A recurrent policy can; a feedforward one sees a
single frame and cannot. Everything else (dynamics, reward, termination, the 500-step limit) is CartPole-v1's.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

_OBSERVED = [0, 2]  # cart position, pole angle (CartPole's observation: x, x_dot, theta, theta_dot)


class CartPoleNoVelocityEnv(CartPoleEnv):
    def __init__(self, render_mode: str | None = None, **kwargs):
        super().__init__(render_mode=render_mode, **kwargs)
        self.observation_space = gym.spaces.Box(self.observation_space.low[_OBSERVED],
                                                self.observation_space.high[_OBSERVED], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return obs[_OBSERVED], info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs[_OBSERVED], reward, terminated, truncated, info
