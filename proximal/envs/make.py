"""``make_envs``: the vector env for an env id and a run's config. The one env module that reads the config: it
turns it into the ``contract.EnvOptions`` the adapters take, so that the adapters know nothing of ``Config``."""

from __future__ import annotations

from ..config import Config, ale_options, env_worker_count
from .atari import is_atari_id
from .atari_backends import make_backend_envs
from .atari_vector import AtariVectorEnv
from .contract import EnvOptions, VecEnv
from .microrts import MicroRTSVectorEnv, is_microrts_id
from .vector import GymVectorEnv


def env_options(cfg: Config) -> EnvOptions:
    return EnvOptions(workers=env_worker_count(cfg), details=cfg.details, repeat_first=cfg.atari_repeat_first,
                      ale_options=ale_options(cfg), backend=cfg.backend)


def make_envs(env_id: str, num_envs: int, render_mode: str | None = None, cfg: Config | None = None) -> VecEnv:
    """The vector env for ``env_id``: the reference's Atari chain and frame stack (``atari_vector``) for ale-py
    ids (``BreakoutNoFrameskip-v4``, ``ALE/Breakout-v5``); Gym-muRTS's grid mode (``microrts``) for
    ``MicroRTS-<map>-<bot>``; gymnasium's envs otherwise. ``cfg`` (the run's config; None: ``EnvOptions()``'s
    defaults) gives the env worker processes (``env_workers``), the Atari details and options, and the Atari
    backend: "envpool" or "ale" runs an Atari id on that C++ vector env instead of the Python chain
    (``atari_backends``)."""
    if is_microrts_id(env_id):
        return MicroRTSVectorEnv(env_id, num_envs)
    options = EnvOptions() if cfg is None else env_options(cfg)
    if options.backend != "python":
        return make_backend_envs(env_id, num_envs, options)
    if is_atari_id(env_id):
        return AtariVectorEnv(env_id, num_envs, render_mode, options)
    return GymVectorEnv(env_id, num_envs, render_mode, options)
