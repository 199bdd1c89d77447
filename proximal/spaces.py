"""What proximal reads from gymnasium spaces, shared by the env layer and the policy: how large an action mask is,
which observations the convolutional trunks take, and the spaces as plain values for checkpoints."""

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
    (4, 84, 84). With Discrete actions they are trained with the Nature CNN; anything else is flattened (uint8
    taken as float32, unscaled: only the Nature CNN divides by 255)."""
    return (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
            and min(space.shape[1:]) >= 36)


def space_to_dict(space: gym.Space) -> dict:
    """A Box, Discrete or MultiDiscrete space as plain values and tensors, which a weights-only checkpoint can
    hold: a trained policy can then be rebuilt without its environment."""
    import torch

    if isinstance(space, gym.spaces.Box):
        return {"kind": "Box", "low": torch.from_numpy(np.array(space.low)),
                "high": torch.from_numpy(np.array(space.high)), "dtype": np.dtype(space.dtype).name}
    if isinstance(space, gym.spaces.Discrete):
        return {"kind": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"kind": "MultiDiscrete", "nvec": torch.from_numpy(np.array(space.nvec, np.int64)),
                "start": torch.from_numpy(np.array(space.start, np.int64))}
    raise TypeError(f"{space} cannot be saved: proximal trains Box, Discrete and MultiDiscrete spaces")


def space_from_dict(saved: dict) -> gym.Space:
    """The space ``space_to_dict`` saved."""
    kind = saved["kind"]
    if kind == "Box":
        dtype = np.dtype(saved["dtype"])
        return gym.spaces.Box(saved["low"].numpy().astype(dtype), saved["high"].numpy().astype(dtype), dtype=dtype)
    if kind == "Discrete":
        return gym.spaces.Discrete(saved["n"], start=saved["start"])
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(saved["nvec"].numpy(), start=saved["start"].numpy())
    raise ValueError(f"unknown space kind {kind!r}")
