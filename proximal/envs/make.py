"""``make_envs``: the vector env for an env id and a run's config. The one env module that reads the config: it
turns it into the ``contract.EnvOptions`` the adapters take, so that the adapters know nothing of ``Config``."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym

from ..config import Config, ale_options, env_worker_count
from ..errors import UserError
from .atari import is_atari_id
from .atari_backends import make_backend_envs
from .atari_vector import AtariVectorEnv
from .contract import EnvOptions, VecEnv
from .microrts import MicroRTSVectorEnv, is_microrts_id
from .vector import FACTORY_PREFIX, GymVectorEnv, factory_id


def env_options(cfg: Config) -> EnvOptions:
    return EnvOptions(workers=env_worker_count(cfg), details=cfg.details, repeat_first=cfg.atari_repeat_first,
                      ale_options=ale_options(cfg), backend=cfg.backend)


def envs_step_elsewhere(cfg: Config) -> bool:
    """Whether the run's envs step outside the trainer's thread while it waits for them: in worker processes (or
    an Atari backend's threads) where there are several env workers, or in Gym-muRTS's Java threads."""
    return env_worker_count(cfg) > 1 or is_microrts_id(cfg.env_id)


def make_envs(env_id: str, num_envs: int, render_mode: str | None = None, cfg: Config | None = None,
              factory: Callable[[], gym.Env] | None = None, video_dir: str | None = None) -> VecEnv:
    """The vector env for ``env_id``: the reference's Atari chain and frame stack (``atari_vector``) for ale-py
    ids (``BreakoutNoFrameskip-v4``, ``ALE/Breakout-v5``); Gym-muRTS's grid mode (``microrts``) for
    ``MicroRTS-<map>-<bot>``; gymnasium's envs otherwise, ``module:EnvId`` ids included. ``cfg`` (the run's config;
    None: ``EnvOptions()``'s defaults) gives the env worker processes (``env_workers``), the Atari details and
    options, and the Atari backend: "envpool" or "ale" runs an Atari id on that C++ vector env instead of the
    Python chain (``atari_backends``). ``factory``: the zero-argument function whose envs a run trained on, where
    ``env_id`` records one (``callable:module.qualname``); it must be that same function. ``video_dir``: record env
    0's episodes there (capture_video; gymnasium envs and the Python Atari chain)."""
    options = EnvOptions() if cfg is None else env_options(cfg)
    if factory is not None or env_id.startswith(FACTORY_PREFIX):
        check_same_factory(env_id, factory)
        return GymVectorEnv(factory, num_envs, render_mode, options, video_dir)
    if video_dir is not None and (is_microrts_id(env_id) or options.backend != "python"):
        raise UserError("capture_video records gymnasium envs and the Python Atari chain (--backend python); "
                        f"'{env_id}' with backend {options.backend} does not render its envs: drop --capture-video")
    if is_microrts_id(env_id):
        return MicroRTSVectorEnv(env_id, num_envs)
    if options.backend != "python":
        return make_backend_envs(env_id, num_envs, options)
    if is_atari_id(env_id):
        return AtariVectorEnv(env_id, num_envs, render_mode, options, video_dir)
    return GymVectorEnv(env_id, num_envs, render_mode, options, video_dir)


def check_same_factory(env_id: str, factory: Callable[[], gym.Env] | None) -> None:
    """A run's recorded env (``env_id``) and the factory given for it must agree: a run directory cannot hold the
    function itself, so resuming or evaluating a factory's run asks for it again."""
    recorded = env_id.removeprefix(FACTORY_PREFIX)
    if factory is None:
        raise UserError(f"this run's envs came from the function {recorded}, which a run directory cannot hold: "
                        f"pass it again from Python, e.g. proximal.train(env={recorded.rpartition('.')[2]}, "
                        "run_dir=..., resume=True) or proximal.make_env(run, env=...)")
    if not env_id.startswith(FACTORY_PREFIX):
        raise UserError(f"this run trained on the env id '{env_id}', not on a factory: drop env=")
    given = factory_id(factory)
    # a run trained from a script records the script's functions as __main__.name: the same name imported from the
    # script's module (another script evaluating it) is that function
    if env_id.startswith(f"{FACTORY_PREFIX}__main__.") and given.endswith(f".{recorded.removeprefix('__main__.')}"):
        return
    if given != env_id:
        raise UserError(f"this run's envs came from {recorded}, not {given.removeprefix(FACTORY_PREFIX)}"
                        f": pass {recorded} again")
