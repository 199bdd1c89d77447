"""proximal: PPO with every implementation detail of the reference (OpenAI baselines ppo2).

The Python API: ``train`` (``api``), ``load`` and ``make_env`` (``agent``), ``export_onnx`` (``export``)."""

import gc as _gc

# The imports below (torch above all) leave ~170k objects that live as long as the process; the collector's full
# passes over them during the imports free nothing and cost ~0.1 s of every start
_collecting = _gc.isenabled()
_gc.disable()
try:
    from .agent import Agent, load, make_env
    from .api import Run, UpdateInfo, train
    from .config import PRESETS, Config, preset
    from .errors import UserError
    from .export import export_onnx
finally:
    if _collecting:
        _gc.enable()

__all__ = ["Agent", "Config", "PRESETS", "Run", "UpdateInfo", "UserError", "export_onnx", "load", "make_env",
           "preset", "train"]
__version__ = "0.1.0"
