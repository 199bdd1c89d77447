"""Environments behind one vector-env contract (see ``vector.VecEnv``), whatever the backend."""

from .vector import GymVectorEnv, Step, VecEnv, is_atari_id, make_envs

__all__ = ["GymVectorEnv", "Step", "VecEnv", "is_atari_id", "make_envs"]
