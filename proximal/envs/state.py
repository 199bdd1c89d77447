"""Capturing the state of gymnasium envs as checkpoint-safe values.

A checkpoint loads with ``torch.load(weights_only=True)``, which refuses numpy values, so arrays become tensors
and numpy scalars Python numbers. Envs whose whole state lives in Python attributes (classic control, proximal's
own envs) are captured attribute by attribute, wrappers included (time-limit counters, episode statistics, the
env's RNG). MuJoCo envs add the simulator's full integration state (``mj_getState`` with
``mjSTATE_INTEGRATION``: positions, velocities, actuator activations, controls, warm-start accelerations, time,
...): positions and velocities alone drift after a restore wherever there are contacts (Ant, Hopper).
Atari (ale-py) envs add the emulator's state with its RNG (``cloneState(include_rng=True)``, serialized: RAM,
CPU, frame counters, lives); the wrapper chain's attributes (lives seen, the frame-skip buffer, the running
episode statistics, the env's no-op RNG) are captured like any other. For other envs ``capture`` returns None.
"""

from __future__ import annotations

import numpy as np
import torch

CAPTURABLE_MODULES = ("gymnasium.envs.classic_control", "gymnasium.envs.mujoco", "proximal.envs", "ale_py")


def _layers(env):
    while True:
        yield env
        if not hasattr(env, "env"):
            return
        env = env.env


def _encode(value):
    """(kind, checkpoint-safe value) or None for values that are not state (spaces, render objects, queues)."""
    if isinstance(value, np.generic):  # first: numpy's float64 is also a float
        return ("plain", value.item())
    if value is None or isinstance(value, (bool, int, float, str)):
        return ("plain", value)
    if isinstance(value, np.ndarray) and value.dtype != object:
        return ("array", torch.from_numpy(value.copy()))
    if isinstance(value, tuple) and all(isinstance(v, (int, float)) for v in value):
        # numpy's float64 is a float: make every item a Python number
        return ("tuple", [v.item() if isinstance(v, np.generic) else v for v in value])
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


def _is_mujoco(env) -> bool:
    return type(env).__module__.startswith("gymnasium.envs.mujoco")


# Body quantities that mj_step leaves one integration step behind the state (its forward pass runs before it
# integrates) and that envs read before stepping: Ant-v5 takes its x/y velocity from xpos, Humanoid from xipos.
# The integration state cannot give them back, so they are saved as they are.
_MUJOCO_DERIVED = ("xpos", "xquat", "xmat", "xipos", "ximat", "subtree_com", "cinert", "cvel", "cacc", "cfrc_int",
                   "cfrc_ext")


def _mujoco_state(env) -> dict[str, torch.Tensor]:
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(env.model, spec))
    mujoco.mj_getState(env.model, env.data, state, spec)
    derived = {name: torch.from_numpy(getattr(env.data, name).copy()) for name in _MUJOCO_DERIVED}
    return {"integration": torch.from_numpy(state), **derived}


def _set_mujoco_state(env, state: dict[str, torch.Tensor]) -> None:
    import mujoco

    mujoco.mj_setState(env.model, env.data, state["integration"].numpy(), mujoco.mjtState.mjSTATE_INTEGRATION)
    for name in _MUJOCO_DERIVED:
        getattr(env.data, name)[:] = state[name].numpy()


def _is_ale(env) -> bool:
    return type(env).__module__.startswith("ale_py")


def _ale_state(env) -> torch.Tensor:
    return torch.frombuffer(bytearray(env.ale.cloneState(include_rng=True).serialize()), dtype=torch.uint8)


def _set_ale_state(env, state: torch.Tensor) -> None:
    import ale_py

    env.ale.restoreState(ale_py.ALEState(state.numpy().tobytes()))


def capture(env) -> dict | None:
    """One env's state (its wrappers' included) as checkpoint-safe values; None if it cannot be captured."""
    if not type(env.unwrapped).__module__.startswith(CAPTURABLE_MODULES):
        return None
    sim = env.unwrapped
    return {
        "layers": [{k: list(enc) for k, v in vars(layer).items() if (enc := _encode(v)) is not None}
                   for layer in _layers(env)],
        "mujoco": _mujoco_state(sim) if _is_mujoco(sim) else None,
        "ale": _ale_state(sim) if _is_ale(sim) else None,
    }


def restore(env, state: dict) -> None:
    for layer, attrs in zip(_layers(env), state["layers"], strict=True):
        for name, (kind, value) in attrs.items():
            setattr(layer, name, _decode(kind, value, getattr(layer, name, None)))
    if state["mujoco"] is not None:
        _set_mujoco_state(env.unwrapped, state["mujoco"])
    if state["ale"] is not None:
        _set_ale_state(env.unwrapped, state["ale"])


def capture_all(envs) -> list[dict | None]:
    """``capture`` of each env (a function of a group's envs for ``workers.EnvGroups.call``)."""
    return [capture(env) for env in envs]


def restore_all(envs, states: list[dict]) -> list:
    for env, state in zip(envs, states, strict=True):
        restore(env, state)
    return []
