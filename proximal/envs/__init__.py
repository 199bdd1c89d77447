"""Environments behind one vector-env contract, whatever the backend. proximal's own gymnasium ids
(``proximal/CartPoleNoVelocity-v1``) are registered by ``proximal`` itself (``env_ids``).

The layout, from the bottom up: ``contract`` (what every vector env promises and is given), the adapters that
implement it (``vector`` for gymnasium's envs, ``atari_vector`` for the reference's Atari chain, ``atari_backends``
for envpool's and ale-py's C++ Atari envs, ``microrts`` for Gym-muRTS), with their parts (``workers``: env
processes, ``state``: checkpoints of env state, ``atari``: the Atari wrappers), and ``make``, which picks the
adapter for a run. ``normalize`` wraps any of them for MuJoCo's normalization.
"""

from .atari import is_atari_id
from .contract import Step, VecEnv, action_masks
from .make import envs_step_elsewhere, make_envs
from .vector import GymVectorEnv

__all__ = ["GymVectorEnv", "Step", "VecEnv", "action_masks", "envs_step_elsewhere", "is_atari_id", "make_envs"]
