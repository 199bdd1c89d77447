"""Environments behind one vector-env contract (see ``vector.VecEnv``), whatever the backend. Importing this
package registers proximal's own gymnasium ids (``proximal/CartPoleNoVelocity-v1``)."""

from . import masked_multidiscrete, memory
from .vector import GymVectorEnv, Step, VecEnv, action_masks, is_atari_id, make_envs

memory.register()
masked_multidiscrete.register()

__all__ = ["GymVectorEnv", "Step", "VecEnv", "action_masks", "is_atari_id", "make_envs"]
