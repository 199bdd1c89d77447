"""proximal: PPO with every implementation detail of the reference (OpenAI baselines ppo2).

The Python API: ``train`` (``api``), ``load`` and ``make_env`` (``agent``), ``export_onnx`` (``export``). Each name
is imported at its first use, so that ``import proximal`` and the command's help, usage errors and ``details``
cost no torch import (~2 s); ``from proximal import train`` works as usual."""

import gc as _gc
import importlib as _importlib

from . import env_ids as _env_ids

# each public name and the module it lives in
_PUBLIC = {"Agent": "agent", "load": "agent", "make_env": "agent", "Run": "api", "UpdateInfo": "api", "train": "api",
           "PRESETS": "config", "Config": "config", "preset": "config", "UserError": "errors",
           "export_onnx": "export"}
__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"

_env_ids.register()  # gym.make("proximal:proximal/CartPoleNoVelocity-v1") imports this package for them


def import_heavy(module: str):
    """``importlib.import_module`` with the collector off: torch's import leaves ~170k objects that live as long as
    the process, and the collector's full passes over them during the import free nothing and cost ~0.1 s."""
    collecting = _gc.isenabled()
    _gc.disable()
    try:
        return _importlib.import_module(module)
    finally:
        if collecting:
            _gc.enable()


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'proximal' has no attribute '{name}'")
    value = getattr(import_heavy(f"{__name__}.{_PUBLIC[name]}"), name)
    globals()[name] = value  # once: later uses are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
