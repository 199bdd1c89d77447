"""What proximal reads from gymnasium spaces, shared by the env layer and the policy: how large an action mask is,
and which observations the convolutional trunks take."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def action_mask_size(action_space: gym.Space) -> int:
    """Entries of one env's action mask (aux.action_masking): n for Discrete, sum(nvec) for MultiDiscrete, one
    per logit of the policy head."""
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        return int(action_space.nvec.sum())
    return int(action_space.n)


def is_grid_space(observation_space: gym.Space, action_space: gym.Space) -> bool:
    """(H, W, C) observations with MultiDiscrete actions of shape (H * W, c), the same c choices in every cell."""
    return (isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 3
            and isinstance(action_space, gym.spaces.MultiDiscrete) and action_space.nvec.ndim == 2
            and action_space.nvec.shape[0] == observation_space.shape[0] * observation_space.shape[1]
            and bool((action_space.nvec == action_space.nvec[0]).all()))


def is_image_space(space: gym.Space) -> bool:
    """uint8 (C, H, W) observations at least 36 x 36 (the smallest the Nature CNN takes): the Atari frame stack's
    (4, 84, 84). With Discrete actions they are trained with the Nature CNN; anything else is flattened."""
    return (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
            and min(space.shape[1:]) >= 36)
