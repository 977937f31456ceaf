"""What every other bex package shares: the config convention and the torch helpers (no Ray, no dm_control).

The leftmost package of the dependency order
``core <- entropy, envs <- replay <- actors, learners <- cluster``.
"""
from .config import PRESET_NAMES, ConfigBase, fmt_range, param

__all__ = ["ConfigBase", "param", "PRESET_NAMES", "fmt_range"]
