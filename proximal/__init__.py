"""proximal: PPO with every implementation detail of the reference (OpenAI baselines ppo2)."""

from .config import PRESETS, Config, preset
from .trainer import train

__all__ = ["Config", "PRESETS", "preset", "train"]
__version__ = "0.1.0"
