"""The Python API: ``proximal.train`` with an env given by id or factory, keyword overrides validated as the
command line's flags and callbacks after every update; ``proximal.load`` (``agent``) for inference."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import gymnasium as gym

from . import trainer
from .agent import Agent, load
from .cli import apply_overrides
from .config import Config, preset
from .envs.vector import factory_id
from .errors import UserError
from .trainer import Callback, UpdateInfo

__all__ = ["Run", "UpdateInfo", "train"]

# what each kind of field accepts, and how the message names it
_KINDS = {
    bool: ("true or false (a bool)", lambda v: isinstance(v, bool), bool),
    int: ("an int", lambda v: isinstance(v, int) and not isinstance(v, bool), int),
    float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), float),
    str: ("a str", lambda v: isinstance(v, str), str),
    tuple[int, ...]: ("a list or tuple of ints",
                      lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool)
                                                                      for x in v), tuple),
}
# set otherwise: the preset by the first argument, the details by on= and off=
_NOT_OVERRIDES = {"preset": "pass the preset as train's first argument",
                  "details": "switch details with on=[...] and off=[...]"}


@dataclass
class Run:
    """A finished (or stopped) training call: where it wrote, its config and how far it got."""

    run_dir: Path
    cfg: Config
    update: int
    global_step: int

    @property
    def stopped(self) -> bool:
        """Whether a callback stopped it before its last update."""
        return self.update < self.cfg.num_updates

    def load(self, device: str = "cpu") -> Agent:
        """The agent of the run's newest checkpoint."""
        return load(self.run_dir, device)


def _coerce(name: str, value):
    hints = typing.get_type_hints(Config)
    if name in _NOT_OVERRIDES:
        raise UserError(f"'{name}' is not a keyword override: {_NOT_OVERRIDES[name]}")
    if name not in hints:
        close = difflib.get_close_matches(name, hints, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(f"unknown option '{name}'; {hint}the options are Config's fields (proximal train --help)")
    label, accepts, convert = _KINDS[hints[name]]
    if not accepts(value):
        raise UserError(f"{name} expects {label}, got {value!r} ({type(value).__name__})")
    return convert(value)


def _ids(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def train(preset_or_config: str | Config = "classic", *, env: str | Callable[[], gym.Env] | None = None,
          run_dir: str | Path | None = None, resume: bool = False,
          callbacks: Callback | Iterable[Callback] = (), quiet: bool = False,
          on: str | Iterable[str] = (), off: str | Iterable[str] = (), **overrides) -> Run:
    """Train a policy and return the ``Run`` (its directory, config and final counters).

    ``preset_or_config``: a preset's name (``proximal.PRESETS``) or a ``Config``. ``env``: a registered id, a
    ``module:EnvId`` id (the module is imported from the current directory) or a zero-argument function returning
    a ``gymnasium.Env``, whose envs get what an id's get; the run records it as ``callable:module.qualname``.
    ``overrides``: any ``Config`` field (``total_steps=50_000``, ``hidden_sizes=(64, 64)``), checked as the
    command line checks its flags; ``on``/``off``: detail IDs to switch (``proximal details``). ``run_dir``
    defaults to ``runs/<env>__<preset>__<seed>__<time>``.

    ``callbacks``: functions called after every update with an ``UpdateInfo`` (statistics, update number,
    global step, episodes, the live policy); one returning False stops the run after that update, with a
    checkpoint, and the run can be resumed.

    ``resume``: continue the run in ``run_dir`` from its newest checkpoint with its own config (only ``device``
    may be overridden); a run trained on a factory needs the same factory as ``env``.

    Bad input raises ``proximal.UserError`` with the command line's message."""
    callbacks = (callbacks,) if callable(callbacks) else tuple(callbacks)
    factory = env if callable(env) else None
    if resume:
        changed = sorted(set(overrides) - {"device"})
        if changed or on or off or preset_or_config != "classic" or isinstance(env, str):
            raise UserError("resume continues a run with its own config; drop the other arguments (only env= for "
                            "a factory's run, device=, quiet= and callbacks= may be given)")
        if run_dir is None:
            raise UserError("resume=True needs the run_dir of the run to continue")
        device = _coerce("device", overrides["device"]) if "device" in overrides else None
        state = trainer.train(None, Path(run_dir), resume=True, quiet=quiet, device=device, env_fn=factory,
                              callbacks=callbacks)
        return Run(Path(run_dir), state.cfg, state.update, state.global_step)

    if isinstance(preset_or_config, Config):
        cfg = replace(preset_or_config, details=dict(preset_or_config.details))
    else:
        cfg = preset(preset_or_config)
    values = {name: _coerce(name, value) for name, value in overrides.items()}
    if env is not None:
        if "env_id" in values:
            raise UserError("give the env once: env= or env_id=, not both")
        if not (factory or isinstance(env, str)):
            raise UserError(f"env takes an env id or a zero-argument function returning a gymnasium.Env, got "
                            f"{type(env).__name__}")
        values["env_id"] = factory_id(factory) if factory else env
    cfg = apply_overrides(cfg, values, _ids(on), _ids(off))
    run_dir = Path(run_dir) if run_dir is not None else trainer.default_run_dir(cfg)
    state = trainer.train(cfg, run_dir, quiet=quiet, env_fn=factory, callbacks=callbacks)
    return Run(run_dir, state.cfg, state.update, state.global_step)
