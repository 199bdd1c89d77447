"""proximal: PPO with every implementation detail of the reference (OpenAI baselines ppo2).

The Python API: ``train`` (``api``), ``load`` and ``make_env`` (``agent``), ``export_onnx`` (``export``)."""

from .agent import Agent, load, make_env
from .api import Run, UpdateInfo, train
from .config import PRESETS, Config, preset
from .errors import UserError
from .export import export_onnx

__all__ = ["Agent", "Config", "PRESETS", "Run", "UpdateInfo", "UserError", "export_onnx", "load", "make_env",
           "preset", "train"]
__version__ = "0.1.0"
