"""proximal's own gymnasium ids, registered when ``proximal`` is imported (as ``gym.make("proximal:<id>")`` does):
by entry-point strings, so that an env's module, and torch with the envs package, load only when the env is made."""

from __future__ import annotations

import gymnasium as gym

# id -> (entry point, gym.register's other keywords)
IDS = {
    # CartPole without its velocities, the memory task of the LSTM presets (envs/memory.py)
    "proximal/CartPoleNoVelocity-v1": ("proximal.envs.memory:CartPoleNoVelocityEnv",
                                       {"max_episode_steps": 500, "reward_threshold": 475.0}),
    "proximal/MaskedMultiDiscrete-v0": ("proximal.envs.masked_multidiscrete:MaskedMultiDiscreteEnv", {}),
}


def register() -> None:
    for env_id, (entry_point, options) in IDS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=entry_point, **options)
