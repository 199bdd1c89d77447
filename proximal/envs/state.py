"""Capturing the state of pure-Python gymnasium envs as checkpoint-safe values.

A checkpoint loads with ``torch.load(weights_only=True)``, which refuses numpy values, so arrays become tensors
and numpy scalars Python numbers. Only envs whose whole state lives in Python attributes can be captured this way
(classic control, proximal's own envs); for the others ``capture`` returns None.
"""

from __future__ import annotations

import numpy as np
import torch

CAPTURABLE_MODULES = ("gymnasium.envs.classic_control", "proximal.envs")


def _layers(env):
    while True:
        yield env
        if not hasattr(env, "env"):
            return
        env = env.env


def _encode(value):
    """(kind, checkpoint-safe value) or None for values that are not state (spaces, render objects, queues)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return ("plain", value)
    if isinstance(value, np.generic):
        return ("plain", value.item())
    if isinstance(value, np.ndarray) and value.dtype != object:
        return ("array", torch.from_numpy(value.copy()))
    if isinstance(value, tuple) and all(isinstance(v, (int, float)) for v in value):
        return ("tuple", list(value))
    if isinstance(value, np.random.Generator):
        return ("rng", value.bit_generator.state)
    return None


def _decode(kind, value, current):
    if kind == "array":
        return value.numpy().copy()
    if kind == "tuple":
        return tuple(value)
    if kind == "rng":
        current.bit_generator.state = value
        return current
    return value


def capture(envs) -> dict | None:
    if not all(type(e.unwrapped).__module__.startswith(CAPTURABLE_MODULES) for e in envs):
        return None
    return {"envs": [[{k: list(enc) for k, v in vars(layer).items() if (enc := _encode(v)) is not None}
                      for layer in _layers(env)] for env in envs]}


def restore(envs, state: dict) -> None:
    for env, layers in zip(envs, state["envs"], strict=True):
        for layer, attrs in zip(_layers(env), layers, strict=True):
            for name, (kind, value) in attrs.items():
                setattr(layer, name, _decode(kind, value, getattr(layer, name, None)))
