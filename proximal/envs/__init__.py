"""Environments behind one vector-env contract (see ``vector.VecEnv``), whatever the backend."""

from . import masked_multidiscrete
from .vector import GymVectorEnv, Step, VecEnv, action_masks, is_atari_id, make_envs

__all__ = ["GymVectorEnv", "Step", "VecEnv", "action_masks", "is_atari_id", "make_envs"]

masked_multidiscrete.register()
