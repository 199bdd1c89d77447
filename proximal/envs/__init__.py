"""Environments behind one vector-env contract (see ``vector.VecEnv``), whatever the backend. Importing this
package registers proximal's own gymnasium ids (``proximal/CartPoleNoVelocity-v1``)."""

from . import memory
from .vector import GymVectorEnv, Step, VecEnv, is_atari_id, make_envs

memory.register()

__all__ = ["GymVectorEnv", "Step", "VecEnv", "is_atari_id", "make_envs"]
